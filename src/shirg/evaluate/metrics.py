"""Benchmark metrics, defined as lmms-eval computes them (docs/lavida_facts.md section 9).

Per-sample functions return floats in [0, 1] (CIDEr-D excepted: it is corpus-level, see
:func:`cider_d`). Edit distances come from rapidfuzz, not a hand loop.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

from shirg.entitygrid import COLOURS, SHAPES
from shirg.errors import ConfigError

# ----------------------------------------------------------------------------- ChartQA


def _to_float(text: str) -> float | None:
    """lmms-eval's parse: a trailing % divides by 100; anything float() rejects is not a number."""
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0
        return float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = 0.05) -> float:
    """ChartQA relaxed accuracy of one prediction against one target.

    Both parse as numbers and the target is non-zero: correct iff |p - t| / |t| <= 5 %. Otherwise
    (text answers, or target 0) a case-insensitive exact string match.
    """
    prediction, target = prediction.strip(), target.strip()
    p, t = _to_float(prediction), _to_float(target)
    if p is not None and t:  # t == 0 falls through to the string match, as in lmms-eval
        return float(abs(p - t) / abs(t) <= max_relative_change)
    return float(prediction.lower() == target.lower())


def relaxed_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """Best relaxed correctness over the ground truths (HF ChartQA stores a list)."""
    return max((relaxed_correctness(prediction, a) for a in _answers(answers)), default=0.0)


# ----------------------------------------------------------------------------- ANLS / exact match

ANLS_VARIANTS = ("standard", "lmms-eval")


def _norm_space(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, answers: Sequence[str], variant: str = "standard", threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one prediction.

    Per ground truth: NL = lev(norm(gt), norm(pred)) / divisor, norm = strip + lower + collapse
    spaces; score = 1 - min NL, set to 0 when it falls below ``threshold`` (0.5 itself is kept).
    ``variant="standard"``: divisor = max length of the NORMALIZED strings (the DocVQA definition);
    ``variant="lmms-eval"``: divisor = max length of the RAW strings, as lmms-eval's ``anls`` does.
    """
    if variant not in ANLS_VARIANTS:
        raise ConfigError(f"unknown ANLS variant {variant!r}; choose one of {', '.join(ANLS_VARIANTS)}")
    pred_n = _norm_space(prediction)
    values = []
    for gt in _answers(answers):
        gt_n = _norm_space(gt)
        dist = Levenshtein.distance(gt_n, pred_n)
        if variant == "standard":
            length = max(len(gt_n), len(pred_n))
        else:
            length = max(len(gt.upper()), len(prediction.upper()))
        values.append(0.0 if length == 0 else dist / length)
    if not values:
        return 0.0
    score = 1.0 - min(values)
    return score if score >= threshold else 0.0


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1 if the prediction equals any ground truth after strip + lower + collapsing spaces."""
    p = _norm_space(prediction)
    return float(any(p == _norm_space(a) for a in _answers(answers)))


# ----------------------------------------------------------------------------- VQA (TextVQA)

# The VQA / EvalAI answer normalization (Antol et al. 2015 evaluation code; lmms-eval's
# EvalAIAnswerProcessor): contractions restored, number words to digits, articles dropped,
# punctuation removed or spaced. Capitalized keys ("Im", "Ive") never match after lowering; kept
# because the reference table has them.
_CONTRACTION_PAIRS = """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've
couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've
hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's
howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd
itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't
mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've
neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at
'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've
shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd
somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's
someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll
someones:someone's somethingd:something'd somethingd've:something'd've something'dve:something'd've
somethingll:something'll thats:that's thered:there'd thered've:there'd've there'dve:there'd've
therere:there're theres:there's theyd:they'd theyd've:they'd've they'dve:they'd've theyll:they'll
theyre:they're theyve:they've twas:'twas wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've
werent:weren't whatll:what'll whatre:what're whats:what's whatve:what've whens:when's whered:where'd
wheres:where's whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's
whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't
wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll
yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've
you'dve:you'd've youll:you'll youre:you're youve:you've
"""
CONTRACTIONS = dict(pair.split(":", 1) for pair in _CONTRACTION_PAIRS.split())
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",",
               "?", "!")
# The reference pattern reads "(?!<=\d)": a typo for a look-behind that makes it a no-op look-ahead,
# so a period is dropped unless a digit follows ("3.5" stays, "end." loses it). Kept as is.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")


def normalize_vqa_answer(text: str) -> str:
    """The standard VQA answer normalization (identical output to lmms-eval's EvalAIAnswerProcessor)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if p + " " in text or " " + p in text or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD_STRIP.sub("", out, count=32)  # the reference passes re.UNICODE (32) as the count
    words = [NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy with the standard leave-one-out averaging over the (10) human answers.

    For each human answer i: min(1, #matches among the OTHER answers / 3); the mean over i. With
    10 answers, m matches give 0, 0.3, 0.6, 0.9, 1 for m = 0..4+ (so min(m / 3, 1) up to rounding).
    A single ground truth degrades to normalized exact match.
    """
    gts = [normalize_vqa_answer(a) for a in _answers(answers)]
    if not gts:
        return 0.0
    pred = normalize_vqa_answer(prediction)
    if len(gts) == 1:
        return float(pred == gts[0])
    accs = []
    for i in range(len(gts)):
        matches = sum(1 for j, g in enumerate(gts) if j != i and g == pred)
        accs.append(min(1.0, matches / 3.0))
    return sum(accs) / len(accs)


# ----------------------------------------------------------------------------- EntityGrid

ENTITYGRID_TYPES = ("recognition", "position", "counting", "reading")
_MORE_NUMBERS = {"eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15",
                 "sixteen": "16", "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20"}
_POSITION = re.compile(r"row\s*#?\s*(\d+)\D{0,16}?col(?:umn)?\s*#?\s*(\d+)|\(\s*(\d+)\s*,\s*(\d+)\s*\)")


def set_f1(predicted: set, gold: set) -> float:
    """F1 of two sets; both empty counts as a perfect answer."""
    if not predicted and not gold:
        return 1.0
    hit = len(predicted & gold)
    if hit == 0:
        return 0.0
    precision, recall = hit / len(predicted), hit / len(gold)
    return 2 * precision * recall / (precision + recall)


def parse_positions(text: str) -> set[tuple[int, int]]:
    """Every (row, column) named as "row 3, column 5" / "row 3 col 5" / "(3, 5)"."""
    out = set()
    for m in _POSITION.finditer(text.lower()):
        r, c = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        out.add((int(r), int(c)))
    return out


def first_number(text: str) -> str | None:
    """The first integer in the answer, number words (zero..twenty) included."""
    for word in re.findall(r"[a-z]+|\d+", text.lower()):
        if word.isdigit():
            return str(int(word))
        if word in NUMBER_WORDS and word != "none":
            return NUMBER_WORDS[word]
        if word in _MORE_NUMBERS:
            return _MORE_NUMBERS[word]
    return None


def _vocab_words(text: str, vocab: Sequence[str]) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower())
    singular = {w[:-1] if w.endswith("s") and w[:-1] in vocab else w for w in words}
    return {w for w in singular if w in vocab}


def entitygrid_score(prediction: str, answers: Sequence[str], qtype: str) -> dict[str, float]:
    """Correctness and F1 of one EntityGrid answer (question types: docs/entitygrid.md).

    - recognition: the prediction names exactly the right colour and shape (no other colour or shape);
    - position: the set of (row, column) pairs parsed from the prediction equals the gold set;
      F1 between the two sets (multi-entity answers get partial credit);
    - counting, reading: the first integer of the prediction equals the answer.
    For single-answer types F1 equals correctness.
    """
    answers = _answers(answers)
    if qtype == "position":
        gold = set().union(*(parse_positions(a) for a in answers)) if answers else set()
        f1 = set_f1(parse_positions(prediction), gold)
        return {"correct": float(f1 == 1.0), "f1": f1}
    if qtype == "recognition":
        vocab = tuple(COLOURS) + tuple(SHAPES)
        ok = any(_vocab_words(prediction, vocab) == _vocab_words(a, vocab) for a in answers)
    elif qtype in ("counting", "reading"):
        got = first_number(prediction)
        ok = got is not None and any(got == first_number(a) for a in answers)
    else:
        raise ConfigError(f"unknown EntityGrid question type {qtype!r}; valid: {', '.join(ENTITYGRID_TYPES)}")
    return {"correct": float(ok), "f1": float(ok)}


# ----------------------------------------------------------------------------- CIDEr-D


def caption_tokens(text: str) -> list[str]:
    """Lower-case words and numbers (decimals kept whole), punctuation dropped: a PTB-like split
    that needs no Java (pycocoevalcap's PTBTokenizer does)."""
    return re.findall(r"\d+(?:\.\d+)?|[^\W_]+", text.lower())


def _ngrams(words: list[str], n: int = 4) -> Counter:
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _cider_own(hyps: list[str], refs: list[list[str]], n: int = 4, sigma: float = 6.0) -> list[float]:
    """CIDEr-D exactly as pycocoevalcap's CiderScorer computes it (clipped tf-idf cosine per n-gram
    order, Gaussian length penalty on the count of BIGRAMS - a quirk of the reference - mean over
    orders, mean over references, times 10)."""
    ctest = [_ngrams(h.split(), n) for h in hyps]
    crefs = [[_ngrams(r.split(), n) for r in rs] for rs in refs]
    df: Counter = Counter()
    for rs in crefs:
        df.update({g for r in rs for g in r})
    ref_len = math.log(float(len(crefs)))

    def vec(counts: Counter):
        v = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            v[k][gram] = tf * (ref_len - math.log(max(1.0, df[gram])))
            norm[k] += v[k][gram] ** 2
            if k == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for test, rs in zip(ctest, crefs, strict=True):
        vh, nh, lh = vec(test)
        total = [0.0] * n
        for r in rs:
            vr, nr, lr = vec(r)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    val /= nh[k] * nr[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(rs) * 10.0)
    return scores


def cider_d(predictions: Sequence[str], references: Sequence[Sequence[str]], backend: str = "auto") -> dict:
    """Corpus CIDEr-D (pycocoevalcap's ``Cider``): returns {"cider": mean, "per_sample": [...], "backend"}.

    Texts are tokenized with :func:`caption_tokens` first. ``backend``: "pycocoevalcap" (needs the
    ``eval`` extra), "own" (this module, the same arithmetic), or "auto" (pycocoevalcap when
    installed). Scores are on pycocoevalcap's scale (a perfect match scores 10 per sample when every
    n-gram is rare); papers print 100 x the corpus mean.
    """
    if len(predictions) != len(references):
        raise ConfigError(f"{len(predictions)} predictions but {len(references)} reference lists")
    if not predictions:
        return {"cider": 0.0, "per_sample": [], "backend": "none"}
    hyps = [" ".join(caption_tokens(p)) for p in predictions]
    refs = [[" ".join(caption_tokens(r)) for r in _answers(rs)] or [""] for rs in references]
    if backend not in ("auto", "own", "pycocoevalcap"):
        raise ConfigError(f"unknown CIDEr backend {backend!r}; choose auto, own or pycocoevalcap")
    scorer_cls = None
    if backend != "own":
        try:
            from pycocoevalcap.cider.cider_scorer import CiderScorer as scorer_cls
        except ImportError:
            if backend == "pycocoevalcap":
                raise ConfigError("pycocoevalcap is not installed; pip install 'shirg[eval]' or use "
                                  "backend='own'") from None
    if scorer_cls is not None:
        scorer = scorer_cls(n=4, sigma=6.0)
        for h, rs in zip(hyps, refs, strict=True):
            scorer += (h, rs)
        _, per = scorer.compute_score()
        per = [float(x) for x in per]
        used = "pycocoevalcap"
    else:
        per = _cider_own(hyps, refs)
        used = "own"
    return {"cider": sum(per) / len(per), "per_sample": per, "backend": used}


# ----------------------------------------------------------------------------- helpers


def _answers(answers: Sequence[str] | str) -> list[str]:
    if isinstance(answers, str):
        return [answers]
    return [str(a) for a in answers]
