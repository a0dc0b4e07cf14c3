"""Generate a synthetic, deterministic benchmark corpus for kbrelease.

Two modes:

* generate (default): write ``--paragraphs`` paragraphs of 40-80 words spread
  over ``--files`` Markdown and plain-text files under ``OUT/text/``, and
  ``--images`` procedural images under ``OUT/images/<category>/``.
* mutate (``--mutate-share S`` with S > 0): edit ``S`` of the existing text
  files under ``OUT/text/`` in place, replacing one paragraph in each, so that
  an incremental release has something to pick up. Nothing else is touched.

All content comes from a built-in vocabulary and fixed seeds: the same
arguments always give the same bytes, and no external data is read. Images are
drawn by ``examples/make_images.py`` (imported from the repository by path).

Examples::

    python bench/make_corpus.py --out /tmp/bench-corpus
    python bench/make_corpus.py --out /tmp/bench-corpus --mutate-share 0.01
    python bench/make_corpus.py --out /tmp/bench-corpus --mutate-share 0.01 --round 2

A one-line JSON summary is printed: mode, out, files, paragraphs, images and
bytes (the bytes written by this run).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import random
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import REPO, SMOKE_FILES, SMOKE_IMAGES, SMOKE_PARAGRAPHS, add_smoke  # bench/ is the script's folder, first on sys.path

IMAGES_MODULE = REPO / "examples" / "make_images.py"

MIN_WORDS = 40
MAX_WORDS = 80
#: Share of text files written as Markdown; the rest are plain .txt files.
MARKDOWN_SHARE = 0.7
#: File 1, and every n-th file after it, gets a name with a space and non-ASCII characters.
ODD_NAME_EVERY = 97

# --- vocabulary -------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


TOPICS: dict[str, tuple[str, ...]] = {
    "robotics": _words("robot gripper lidar actuator controller firmware battery charger wheel sensor arm camera encoder motor chassis"),
    "warehouse": _words("pallet shelf aisle conveyor forklift dock parcel order picker tote rack barcode shipment inventory label"),
    "network": _words("router gateway tunnel switch firewall certificate packet subnet resolver proxy link bandwidth port handshake latency"),
    "facilities": _words("kitchen locker badge printer elevator stairwell radiator window desk chair lamp boiler corridor doorway ventilator"),
    "finance": _words("invoice budget receipt ledger forecast payment refund audit allowance quote contract supplier expense account reserve"),
    "data": _words("table index query snapshot schema replica segment vector embedding partition backup migration cluster collection shard"),
    "people": _words("mentor team manager interview workshop handbook survey review goal meeting newcomer buddy course offsite feedback"),
    "kitchen": _words("kettle fridge dishwasher microwave espresso grinder tray mug sandwich salad soup oven spoon menu pantry"),
}

COMMON_NOUNS = _words(
    "plan report schedule checklist ticket process policy request update summary incident release window rule owner log note diagram procedure threshold"
)

ADJECTIVES = _words(
    "quiet careful noisy spare blue amber narrow wide weekly monthly "
    "urgent routine shared private early late fragile sturdy "
    "temporary permanent remote local primary secondary clean dusty "
    "bright heavy light rapid patient hidden visible legacy modern "
    "northern southern eastern western central"
)

VERBS = _words(
    "checks replaces moves records approves inspects cleans restarts "
    "measures labels rotates archives updates reviews schedules "
    "repairs tracks verifies assigns lifts sorts charges tests "
    "reports balances closes opens calibrates documents rebuilds"
)

PREPOSITIONS = _words("near behind beside after before during across through under above with without beyond inside")

ADVERBS = _words("carefully quickly quietly daily weekly again early promptly gently twice together manually automatically eventually precisely")

DETERMINERS = _words("the a each every one that this our")

UNITS = _words("minutes hours days weeks months cycles shifts")

SECTION_WORDS = _words("Overview Procedure Checklist Background Exceptions Contacts Schedule Troubleshooting Notes Limits Examples History")


# --- text generation ----------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    """Word sources for one file: its topic nouns plus the common ones."""

    topic: str
    nouns: tuple[str, ...]

    def noun(self, rng: random.Random) -> str:
        pool = self.nouns if rng.random() < 0.65 else COMMON_NOUNS
        return rng.choice(pool)


def plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _article(words: list[str]) -> list[str]:
    """Turn "a" into "an" before a vowel."""
    fixed = list(words)
    for i, word in enumerate(fixed[:-1]):
        if word in ("a", "A") and fixed[i + 1][0] in "aeiou":
            fixed[i] = word + "n"
    return fixed


def _phrase(rng: random.Random, voice: Voice, size: int) -> list[str]:
    """A prepositional or time phrase of exactly ``size`` words (1-4)."""
    if size == 1:
        return [rng.choice(ADVERBS)]
    if size == 2:
        return [rng.choice(PREPOSITIONS), plural(voice.noun(rng))]
    if size == 3:
        if rng.random() < 0.3:
            return ["every", str(rng.randint(2, 90)), rng.choice(UNITS)]
        return [rng.choice(PREPOSITIONS), "the", voice.noun(rng)]
    return [rng.choice(PREPOSITIONS), "the", rng.choice(ADJECTIVES), voice.noun(rng)]


def sentence(rng: random.Random, voice: Voice, length: int) -> str:
    """A sentence of exactly ``length`` words (at least 6)."""
    words = [
        rng.choice(DETERMINERS).capitalize(),
        rng.choice(ADJECTIVES),
        voice.noun(rng),
        rng.choice(VERBS),
        "the",
        voice.noun(rng),
    ]
    if rng.random() < 0.1:
        words[5] = f"{voice.noun(rng)}-{rng.randint(1, 999)}"
    remaining = length - len(words)
    while remaining > 0:
        size = 1 if remaining == 1 else rng.randint(2, min(4, remaining))
        words.extend(_phrase(rng, voice, size))
        remaining -= size
    return " ".join(_article(words)) + "."


def paragraph(rng: random.Random, voice: Voice) -> str:
    """A paragraph of MIN_WORDS to MAX_WORDS words, in sentences of 6-14."""
    remaining = rng.randint(MIN_WORDS, MAX_WORDS)
    sentences: list[str] = []
    while remaining > 14:
        length = min(rng.randint(6, 14), remaining - 6)
        sentences.append(sentence(rng, voice, length))
        remaining -= length
    sentences.append(sentence(rng, voice, remaining))
    return " ".join(sentences)


def heading(rng: random.Random, voice: Voice) -> str:
    return f"{rng.choice(SECTION_WORDS)}: {rng.choice(ADJECTIVES)} {plural(voice.noun(rng))}"


def render_file(rng: random.Random, voice: Voice, title: str, paragraphs: int, markdown: bool) -> str:
    """Render one file; Markdown gets ``#``/``##``/``###`` headings."""
    blocks: list[str] = [f"# {title}" if markdown else title]
    written = 0
    while written < paragraphs:
        if markdown and written > 0:
            level = "###" if rng.random() < 0.25 else "##"
            blocks.append(f"{level} {heading(rng, voice)}")
        section = min(rng.randint(1, 4), paragraphs - written)
        blocks.extend(paragraph(rng, voice) for _ in range(section))
        written += section
    if markdown and rng.random() < 0.3:
        items = [f"- {sentence(rng, voice, rng.randint(6, 9))}" for _ in range(3)]
        blocks.append("\n".join(items))
    return "\n\n".join(blocks) + "\n"


def split_paragraphs(total: int, files: int, rng: random.Random) -> list[int]:
    """Spread ``total`` paragraphs over ``files`` files, at least one each."""
    weights = [rng.uniform(0.5, 1.5) for _ in range(files)]
    spare = total - files
    scale = spare / sum(weights)
    counts = [1 + math.floor(w * scale) for w in weights]
    # Hand out what rounding left over, largest fractional part first.
    order = sorted(range(files), key=lambda i: (weights[i] * scale) % 1.0, reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def file_name(index: int, topic: str, markdown: bool) -> str:
    ext = "md" if markdown else "txt"
    if index % ODD_NAME_EVERY == 1:
        return f"{topic} notes – café {index:04d}.{ext}"
    return f"{topic}-{index:04d}.{ext}"


# --- images -------------------------------------------------------------------


def load_images_module() -> ModuleType:
    """Import examples/make_images.py from the repository by path."""
    spec = importlib.util.spec_from_file_location("kbrelease_example_images", IMAGES_MODULE)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {IMAGES_MODULE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up here
    spec.loader.exec_module(module)
    return module


def write_images(out: Path, count: int, seed: int) -> tuple[int, int]:
    """Write ``count`` images, categories in turn; return (images, bytes)."""
    if count <= 0:
        return 0, 0
    images = load_images_module()
    categories = list(images.CATEGORIES.values())
    total = 0
    for i in range(count):
        category = categories[i % len(categories)]
        index = i // len(categories) + 1
        # base_seed 1 + seed keeps these apart from the committed examples (0).
        img = images.draw_image(category.name, index, base_seed=1 + seed)
        path = out / category.name / f"{category.prefix}-{index:04d}.{category.ext}"
        total += images.save_image(img, path)
    return count, total


# --- modes --------------------------------------------------------------------


def generate(out: Path, paragraphs: int, files: int, images: int, seed: int) -> dict[str, object]:
    files = max(0, min(files, paragraphs))
    text_dir = out / "text"
    plan_rng = random.Random(f"{seed}:plan")
    counts = split_paragraphs(paragraphs, files, plan_rng) if files else []
    topics = sorted(TOPICS)
    total_bytes = 0
    for index, count in enumerate(counts, start=1):
        rng = random.Random(f"{seed}:file:{index}")
        topic = topics[rng.randrange(len(topics))]
        voice = Voice(topic, TOPICS[topic])
        markdown = rng.random() < MARKDOWN_SHARE
        title = f"{topic.capitalize()} {heading(rng, voice).lower()} ({index})"
        path = text_dir / topic / file_name(index, topic, markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = render_file(rng, voice, title, count, markdown).encode("utf-8")
        path.write_bytes(data)
        total_bytes += len(data)
    image_count, image_bytes = write_images(out / "images", images, seed)
    return {
        "mode": "generate",
        "out": str(out),
        "files": len(counts),
        "paragraphs": sum(counts),
        "images": image_count,
        "bytes": total_bytes + image_bytes,
    }


def is_body(block: str) -> bool:
    """True for a generated paragraph (not a heading, title or list)."""
    return len(block.split()) >= MIN_WORDS and not block.startswith(("#", "- "))


def mutate(out: Path, share: float, seed: int, round_: int) -> dict[str, object]:
    text_dir = out / "text"
    candidates = sorted(p for p in text_dir.rglob("*") if p.suffix in (".md", ".txt"))
    if not candidates:
        raise SystemExit(f"no .md/.txt files under {text_dir}; generate the corpus first")
    rng = random.Random(f"{seed}:mutate:{round_}")
    count = min(len(candidates), max(1, round(share * len(candidates))))
    chosen = sorted(rng.sample(candidates, count))
    changed = 0
    total_bytes = 0
    for path in chosen:
        blocks = path.read_text(encoding="utf-8").rstrip("\n").split("\n\n")
        body = [i for i, block in enumerate(blocks) if is_body(block)]
        if not body:
            continue
        file_rng = random.Random(f"{seed}:mutate:{round_}:{path.relative_to(text_dir)}")
        topic = path.parent.name
        voice = Voice(topic, TOPICS.get(topic, COMMON_NOUNS))
        target = file_rng.choice(body)
        old = blocks[target]
        new = paragraph(file_rng, voice)
        while new == old:  # vanishingly rare, but a mutation must change something
            new = paragraph(file_rng, voice)
        blocks[target] = new
        data = ("\n\n".join(blocks) + "\n").encode("utf-8")
        path.write_bytes(data)
        changed += 1
        total_bytes += len(data)
    return {
        "mode": "mutate",
        "out": str(out),
        "files": changed,
        "paragraphs": changed,
        "images": 0,
        "bytes": total_bytes,
    }


def text_files(text_dir: Path) -> list[Path]:
    return sorted(p for p in text_dir.rglob("*") if p.suffix in (".md", ".txt"))


def digests(text_dir: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in text_files(text_dir)}


def change_text(corpus: Path, edit_share: float, add_share: float, delete_share: float, seed: int) -> dict[str, Any]:
    """The incremental benchmarks' change: edit, add and delete text files of ``corpus`` (a copy).

    ``edit_share`` of the files get one paragraph rewritten (``mutate``, seed 0,
    round 1), then ``delete_share`` of the unchanged ones are removed and
    ``add_share`` new Markdown files written (each at least one file). Shared by
    ``incremental_bench.py`` and ``llamaindex_bench.py`` so both systems see the
    same change. Returns what changed, as paths relative to ``corpus/text``.
    """
    text_dir = corpus / "text"
    before = digests(text_dir)
    n = len(before)
    out: dict[str, Any] = {"text_files_before": n}
    if edit_share > 0:
        mutate(corpus, edit_share, 0, 1)
    after = digests(text_dir)
    edited = sorted(p for p in before if after.get(p) != before[p])
    out["edited"] = [str(p.relative_to(text_dir)) for p in edited]

    rng = random.Random(f"{seed}:incremental")
    unchanged = [p for p in sorted(before) if p not in set(edited)]
    n_delete = max(1, round(delete_share * n)) if delete_share > 0 else 0
    deleted = sorted(rng.sample(unchanged, min(n_delete, len(unchanged))))
    for path in deleted:
        path.unlink()
    out["deleted"] = [str(p.relative_to(text_dir)) for p in deleted]

    n_add = max(1, round(add_share * n)) if add_share > 0 else 0
    mean_paragraphs = 20
    added = []
    topics = sorted(TOPICS)
    for i in range(1, n_add + 1):
        file_rng = random.Random(f"{seed}:added:{i}")
        topic = topics[file_rng.randrange(len(topics))]
        voice = Voice(topic, TOPICS[topic])
        title = f"{topic.capitalize()} added {heading(file_rng, voice).lower()} ({i})"
        path = text_dir / topic / f"added-{i:04d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_file(file_rng, voice, title, mean_paragraphs, markdown=True), encoding="utf-8")
        added.append(str(path.relative_to(text_dir)))
    out["added"] = added
    out["text_files_after"] = len(text_files(text_dir))
    out["changed_files"] = len(edited) + len(deleted) + len(added)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Generate (or mutate) a synthetic benchmark corpus for kbrelease.")
    parser.add_argument("--out", type=Path, default=None, help="output folder (required unless --smoke)")
    parser.add_argument("--paragraphs", type=int, default=10_000, help="text paragraphs")
    parser.add_argument("--files", type=int, default=500, help="text files (.md/.txt), at most --paragraphs")
    parser.add_argument("--images", type=int, default=500, help="procedural images")
    parser.add_argument("--seed", type=int, default=0, help="seed for all content")
    parser.add_argument(
        "--mutate-share",
        type=float,
        default=0.0,
        metavar="S",
        help="instead of generating, edit this share of existing text files in place (one paragraph each), e.g. 0.01",
    )
    parser.add_argument(
        "--round",
        type=int,
        default=1,
        dest="round_",
        help="mutation round; use a new number to mutate different paragraphs",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete OUT/text and OUT/images before generating",
    )
    add_smoke(parser)
    args = parser.parse_args(argv)
    if args.out is None and not args.smoke:
        parser.error("--out is required")
    for name in ("paragraphs", "files", "images"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must not be negative")
    if not 0.0 <= args.mutate_share <= 1.0:
        parser.error("--mutate-share must be between 0 and 1")
    return args


def smoke() -> dict[str, object]:
    """Generate a tiny corpus, mutate it and change it as the incremental benches do, in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="kbcorpus-smoke-") as tmp:
        out = Path(tmp)
        summary = generate(out, SMOKE_PARAGRAPHS, SMOKE_FILES, SMOKE_IMAGES, seed=0)
        mutated = mutate(out, 0.5, 0, 1)
        changed = change_text(out, 0.25, 0.25, 0.25, seed=7)
    return summary | {"smoke": {"mutated_files": mutated["files"], "changed_files": changed["changed_files"]}}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        print(json.dumps(smoke(), ensure_ascii=False))
        return 0
    out: Path = args.out
    if args.mutate_share > 0:
        summary = mutate(out, args.mutate_share, args.seed, args.round_)
    else:
        owned = [out / "text", out / "images"]
        if any(p.exists() and any(p.iterdir()) for p in owned):
            if not args.overwrite:
                raise SystemExit(f"{out} already holds a corpus; pass --overwrite to replace it, or --mutate-share to edit it")
            for p in owned:
                shutil.rmtree(p, ignore_errors=True)
        summary = generate(out, args.paragraphs, args.files, args.images, args.seed)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
