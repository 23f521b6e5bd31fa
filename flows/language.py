"""Which of es, en or fr a resident's first message is in, or None: the engine then asks.

First messages are mostly a few words ("Hola buenas tardes", "Salut, j'ai reçu le lien"), too
short for character statistics, so weighted word lists decide; langdetect only confirms longer
texts the lists say little about. A wrong language is worse than the three-language menu, so
comparable evidence for two languages, or for another one that looks like ours (Portuguese,
Italian), gives None.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import lru_cache

from langdetect import DetectorFactory, detect_langs
from langdetect.lang_detect_exception import LangDetectException

from consulta.flows.model import LANGUAGES
from consulta.flows.normalise import normalise

__all__ = ["detect_language", "parse_language_choice"]

OTHER = "other"  # Portuguese, Italian, German, Haitian Creole, Nahuatl: evidence against ours

# Words as `normalise` leaves them (lower case, no accents), apostrophes kept, by weight.
# A word spelled the same in two groups is listed in both, or in neither when too common to
# tell (de, la, que, y, en, un, no, me, se, a, on, ok, info, link, question, photo, police).
LEXICON: dict[str, dict[float, str]] = {
    "es": {
        3: """
            hola holi holis wenas buenas buenos gracias saludos quiero quisiera gustaria
            necesito disculpe disculpa oiga porfa porfavor usted ustedes encuesta orale
            ahorita quien quienes bache baches basura drenaje coladera alumbrado luminaria
            fraccionamiento inseguridad patrulla patrullas queja ayuntamiento
            """,
        2: """
            buen buena bueno mande claro si el los esto este esta estos estas eso esa ese hay
            mis sus estoy estan soy fue voy van tengo tiene tienen tenemos hace hacer hago
            puedo puede pueden llego llega llegan mandaron pasaron sirve funciona entiendo
            muy pero mucho muchas muchos tambien ahi alla donde cuando cuanto cual xq porq
            alguien nadie neta wey guey chido pues ps oye tardes noches dias manana senor
            senorita joven vecino vecina vecinos esquina cuadra fuga lampara arbol perros
            callejeros seguridad robo asaltan asaltos reporte reportar reporto reportan
            denunciar arreglar pavimenten enlace mensaje informacion pregunta duda ayuda
            ayudar ayudenme gobierno municipio presidencia costo tiempo lunes meses celular
            escriben habla trata registro contestar contesto conteste participo apagada
            sucia llave huele tapo cayo caer cable colgando peligroso tiraron escombro
            terreno baldio rio sospechosa rondando opinion obras anuncio cartel vivo nombre
            mama sabe usar guardo molestia dirijo levantar comite lleva llevamos pidiendo
            aguantan enorme poner saliendo destapada pasado camion parque solicito
            interesa verdad fraude raro hizo rato gente noche lleno problema semana gratis
            necesitamos sale entonces abre ola pasa pipa sin amigo amiga amigos urge vengan
            revisar perfecto empecemos empezar grax paso espanol ingles frances
            """,
        1.5: "las del su lo al yo es para por mi casa calle agua luz",
        1: """
            colonia consulta participar todo toda todos nada algo aqui como porque dia tarde
            jaja jajaja jeje k q alo poste numero mercado
            """,
    },
    "en": {
        3: """
            hi hello helo hiya howdy hey thanks thank thx please pls plz sorry yes yeah survey
            pothole potholes streetlight streetlights garbage trash rubbish sewer manhole
            sidewalk neighborhood neighbourhood broken what's i'm i'd i've i'll it's that's
            there's let's don't doesn't didn't isn't can't won't haven't hasn't you're we're
            they're
            """,
        2: """
            good morning afternoon evening the and is are were been has have had does did can
            could would should my you your we our they their this that these those there
            what whats wat who why where when which how for from with about not sure very
            really again since get got take want wanna gonna like need know tell send help
            work works working saw received clicked shared explain understand speak talking
            writing visiting anyone someone thing answer poll participate complaint problem
            issue street light lights road leak water drain neighbor neighbors neighbour
            patrols tree dogs stray night week month days monday house home building school
            city council free english spanish student tourist legit blocked overflowing
            burning dumped collected bad safe huge low full outside near door last never
            always both same wife husband name kind results dont cant didnt doesnt isnt wont
            ive youre thats theres hows im just more some any here too still out off
            do an it all new long btw idk also sign report moved live living apply brought
            pressure running cover fell fill walk smoke terrible lots flyer poster market
            quick count dear sir madam french
            """,
        1.5: "i u ur of to at by ty lol be its am",
        1: "in up so",
    },
    "fr": {
        3: """
            bonjour bonsoir salut coucou merci oui ouais bjr bsr stp svp je vous votre notre
            quoi koi pourquoi combien avec dans chez beaucoup suis peux veux voudrais
            aimerais jaimerais besoin eau sondage quartier ordures poubelle poubelles dechets
            egout lampadaire eclairage fuite trottoir mairie gratuit jamais mauvais desole
            excusez vacances monsieur madame mademoiselle c'est j'ai jai cest qu'est quest
            d'accord aujourd'hui plait mdr ptdr dsl jsuis chui bnjr
            """,
        2: """
            bon bonne slt allo mr6 dac du des au aux et est sont ce cet cette ces ca elle
            nous ils mon vos leur quel quelle quels qui comment pour sur sans pas ne tout
            toute tous rien aussi encore ici voila avons avez ont etes fait faire fais peut
            pouvez sais savoir comprends comprend parle parlez marche fonctionne recu recois
            envoyer envoie viens habite appelle signaler repondre expliquer ouvrir commence
            inscrire participer rue lien nid poule arbre chiens errants patrouilles nuit jours
            semaine lundi depuis devant partout maire officiel vraie vrai truc affiche femme
            espagnol francais anglais probleme reclamation panne trous pleine electricite
            poteau robinet brule deranger heure tardive temps prend etudiant universite
            nouveau famille avis donner interessee interesse gens ramassees ramasse deborde
            cv jsp tkt bcp pk ai personne vols passe passage plus msg une petite cc parfait
            mrc
            """,
        1.5: "le ma mes il ton arrive inscription marron tres",
        1: "les on ou dont mille",
    },
    OTHER: {
        3: """
            oi tudo obrigado obrigada voce nao quero gostaria estou tenho isso minha meu rua
            uma noite buraco lixo tchau valeu ciao buongiorno buonasera buon buona grazie
            prego sono vorrei partecipare stai questo questa nella acqua c'e sondaggio
            ricevuto guten morgen abend hallo danke bitte ich und nicht geht mochte
            teilnehmen ihnen heute strasse wasser moin servus bonjou bonswa mwen mesi kijan
            kounye niltze tlazocamati
            """,
        2: """
            bom boa bem sim sou isto um salve bene della perche che per strada ist wie der
            ein eine mit schon tag sak nou zot
            """,
        1: """
            agua luz participar problema semana dia tarde como porque aqui nada para por
            algo todo casa il non come ho das die ye pase
            """,
    },
}
PHRASES: dict[str, dict[float, str]] = {
    "es": {
        3: """
            buenas tardes, buenas noches, buenos dias, buen dia, que tal, que onda, k onda,
            q onda, ke tal, k tal, q tal, por favor, que es, como le hago, de que se trata,
            bnas tardes
            """,
    },
    "en": {
        3: """
            good morning, good afternoon, good evening, good night, good day, thank you,
            how are you, whats up, what's up, take part, sign up, street light, afternoon all
            """,
    },
    "fr": {
        3: """
            il y a, y a, bonne journee, bon matin, ca va, c quoi, c pour, est ce, a tous,
            nid de poule, tout le monde, en panne, on y va, s'il vous plait, s'il te plait
            """,
    },
    OTHER: {3: "tudo bem, bom dia, boa tarde, boa noite, sak pase, ni hao"},
}
# Accented spellings that tell more than the bare word: "ola" is a Mexican "hola", "olá" is not.
ACCENTED_WORDS: dict[str, tuple[tuple[str, float], ...]] = {  # as typed, lower case
    "olá": ((OTHER, 4),),
    "é": ((OTHER, 2),),
    "è": ((OTHER, 2),),
    "sì": ((OTHER, 2),),
    "à": (("fr", 1.5),),
    "où": (("fr", 2),),
}
# French elided words (j'ai, l'eau, qu'est) and English contractions (it's, I'd, don't).
FRENCH_ELISIONS = frozenset("j l d qu c n s m t jusqu lorsqu puisqu".split())
ENGLISH_CONTRACTIONS = frozenset("s t d ll re ve m".split())
# Letters that tell: ñ is Spanish; French never writes á í ó ú, Spanish never à â ç è ê.
LETTER_EVIDENCE: tuple[tuple[str, dict[str, float]], ...] = (
    ("ñ", {"es": 1.5}),
    ("áíóú", {"es": 0.5, "fr": -2}),
    ("àâçèêëîïôùûœ", {"fr": 0.5, "es": -2}),
    ("ãõäöß", {OTHER: 3}),
    ("ìò", {OTHER: 2}),
)
# Words whose one-letter typos are read as them, when the typo is no word of ours.
TYPO_TOLERANT = frozenset(
    """
    hola buenas buenos tardes noches gracias saludos quiero quisiera participar encuesta
    disculpe hello morning afternoon evening thanks please survey participate bonjour bonsoir
    salut coucou merci voudrais participer sondage quartier besoin pourquoi bonjou bonswa
    obrigado buongiorno buonasera grazie
    """.split()
)
MIN_SCORE = 2.0  # one greeting, or two plain words
MIN_RATIO = 2.0  # the winner has at least twice the evidence of any other language
MIN_LEAD = 1.5  # and leads by more than one weak word
MAX_CHARS = 400  # a first message's opening says enough; bounds the work on a long one
LANGDETECT_MIN_WORDS = 4
LANGDETECT_MIN_PROBABILITY = 0.90

MENU_CHOICES = {
    "1": "es", "es": "es", "espanol": "es", "spanish": "es", "castellano": "es",
    "espagnol": "es",
    "2": "en", "en": "en", "english": "en", "ingles": "en", "anglais": "en",
    "3": "fr", "fr": "fr", "francais": "fr", "french": "fr", "frances": "fr",
}  # fmt: skip

_URL = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+|\S+\.(?:com|mx|org|net|fr|ca)\b\S*", re.I)
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # a word, with its inner apostrophes
_ELONGATED = re.compile(r"(.)\1{2,}")  # holaaa, hellooo
_NOT_NAME_BREAK = ",-'’&/"  # after these a capital letter is not a sentence's first


Evidence = tuple[tuple[str, float], ...]  # (group, weight) pairs


def _entries(spec: dict[str, dict[float, str]], sep: str | None) -> dict[str, Evidence]:
    """Word or phrase → its evidence; listing one twice for a group is a mistake."""
    table: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for group, by_weight in spec.items():
        for weight, items in by_weight.items():
            for item in filter(str.strip, items.split(sep)):
                key = " ".join(item.split())
                if any(g == group for g, _ in table[key]):
                    raise ValueError(f"{key!r} is listed twice for {group}")
                table[key].append((group, weight))
    return {key: tuple(hits) for key, hits in table.items()}


_WORDS = _entries(LEXICON, None)
_PHRASES = _entries(PHRASES, ",")
_LONGEST_PHRASE = max(len(p.split()) for p in _PHRASES)


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


# Typos of these are read as them ("buenas tardez", "bonjoue"), found by a shared one-letter
# deletion (SymSpell). Only distinctive words: "madam" must not pass for "madame".
if TYPO_TOLERANT - _WORDS.keys():
    raise ValueError(f"typo-tolerant but not listed: {sorted(TYPO_TOLERANT - _WORDS.keys())}")
_TYPO_INDEX: dict[str, set[str]] = defaultdict(set)
for _word in TYPO_TOLERANT:
    for _key in {_word} | _deletions(_word):
        _TYPO_INDEX[_key].add(_word)


def _one_typo_apart(a: str, b: str) -> bool:
    """One letter substituted, inserted, dropped, or two neighbours swapped."""
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (
            len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
        )
    short, long_ = sorted((a, b), key=len)
    return len(long_) - len(short) == 1 and short in _deletions(long_)


def _typo_of(word: str) -> str | None:
    """The one listed word `word` is a typo of, when it is unambiguous."""
    found = {c for key in {word} | _deletions(word) for c in _TYPO_INDEX.get(key, ())}
    found = {c for c in found if _one_typo_apart(word, c)}
    if len({g for c in found for g, _ in _WORDS[c]}) > 1:
        # "bonjoue": bonjour (French) over bonjou (Creole): a same-length slip is likelier.
        found = {c for c in found if len(c) == len(word)}
    if len({g for c in found for g, _ in _WORDS[c]}) != 1:
        return None
    return max(found, key=lambda c: (max(w for _, w in _WORDS[c]), c))  # buens: buenas, buenos


@lru_cache(maxsize=4096)
def _evidence(word: str) -> Evidence:
    """What one folded word says."""
    if word in _WORDS:
        return _WORDS[word]
    if "'" in word:
        head, _, tail = word.partition("'")
        if head in FRENCH_ELISIONS:
            return (("fr", 1.0), *_evidence(tail))
        if tail in ENGLISH_CONTRACTIONS:
            return (("en", 1.0), *_evidence(head))
        return (*_evidence(head), *_evidence(tail))
    if _ELONGATED.search(word):
        for shorter in (_ELONGATED.sub(r"\1\1", word), _ELONGATED.sub(r"\1", word)):
            if shorter in _WORDS:
                return _WORDS[shorter]
    if len(word) >= 5 and word.isalpha() and (typo := _typo_of(word)):
        return tuple((g, w - 0.5) for g, w in _WORDS[typo])
    return ()


def _tokens(text: str) -> list[tuple[str, str, bool]]:
    """(raw, folded, could be a name) for each word; URLs and numbers left out."""
    text = _URL.sub(" ", text.replace("’", "'"))
    found = []
    end = 0
    for match in _TOKEN.finditer(text):
        raw = match.group()
        if raw.isdigit():
            continue
        gap = text[end : match.start()].strip(" \t")
        first = not end or (bool(gap) and gap[-1] not in _NOT_NAME_BREAK)
        end = match.end()
        capital = raw[:1].isupper() and not raw.isupper() and raw.lower() not in ("i", "i'm")
        folded = raw.lower() if raw.isascii() else "'".join(normalise(raw).split())
        found.append((raw, folded, capital and not first))
    capitals = sum(name for *_, name in found)
    if capitals * 2 > len(found) - 1:  # Title Case Typing, not names
        return [(raw, folded, False) for raw, folded, _ in found]
    # A short word between two names is part of them: Real del Monte, Mineral de la Reforma.
    return [
        (raw, folded, name or (len(folded) <= 3 and _between_names(found, i)))
        for i, (raw, folded, name) in enumerate(found)
    ]


def _between_names(found: list[tuple[str, str, bool]], i: int) -> bool:
    before = next((t[2] for t in reversed(found[:i]) if len(t[1]) > 3), False)
    after = next((t[2] for t in found[i + 1 :] if len(t[1]) > 3), False)
    return before and after


def _scores(text: str) -> tuple[dict[str, float], int]:
    """Evidence per group, and the number of words."""
    scores = dict.fromkeys((*LANGUAGES, OTHER), 0.0)
    text = text[:MAX_CHARS]
    tokens = _tokens(text)
    folded = [f for _, f, _ in tokens]
    seen: set[str] = set()  # a word counts once: "bonjour bonjour hola" is still mixed
    i = 0
    while i < len(tokens):
        for size in range(min(_LONGEST_PHRASE, len(tokens) - i), 1, -1):
            key = " ".join(folded[i : i + size])
            if key in _PHRASES:
                for group, weight in _PHRASES[key] if key not in seen else ():
                    scores[group] += weight
                seen.add(key)
                i += size
                break
        else:
            raw, word, name = tokens[i]
            i += 1
            if name or word in seen:  # Calle Hidalgo, Juan Pérez: not the writer's language
                continue
            seen.add(word)
            for group, weight in _evidence(word):
                scores[group] += weight
            if not raw.isascii():
                lower = raw.lower()
                for group, weight in ACCENTED_WORDS.get(lower, ()):
                    scores[group] += weight
                for letters, effects in LETTER_EVIDENCE:
                    if any(ch in lower for ch in letters):
                        for group, weight in effects.items():
                            scores[group] += weight
    if "¿" in text or "¡" in text:
        scores["es"] += 2
    return scores, len(tokens)


def detect_language(text: str | None) -> str | None:
    """es, en or fr when the text says so clearly; None when unsure."""
    if not text or not text.strip():
        return None
    scores, words = _scores(text)
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)
    best, runner_up = scores[ranked[0]], max(scores[ranked[1]], 0.0)
    if (
        ranked[0] in LANGUAGES
        and best >= MIN_SCORE
        and best >= MIN_RATIO * runner_up
        and best - runner_up >= MIN_LEAD
    ):
        return ranked[0]
    if words < LANGDETECT_MIN_WORDS or scores[OTHER] > 0:
        return None
    # A longer text the word lists say little about: langdetect, when sure and not contradicted.
    guess = _langdetect(text[:MAX_CHARS])
    if guess and scores[guess] > 0 and all(scores[guess] >= s for s in scores.values()):
        return guess
    return None


def _langdetect(text: str) -> str | None:
    DetectorFactory.seed = 0  # langdetect is random by default: the same text, the same answer
    try:
        top = detect_langs(text)[0]
    except LangDetectException:
        return None
    return top.lang if top.lang in LANGUAGES and top.prob >= LANGDETECT_MIN_PROBABILITY else None


def parse_language_choice(text: str | None) -> str | None:
    """The answer to the three-language menu: a digit or a language's name."""
    return MENU_CHOICES.get(normalise(text))
