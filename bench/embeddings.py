"""Embedding throughput: the NumPy all-MiniLM-L6-v2 against the hashing fallback.

Not a test: numbers depend on the machine. Run it after touching core/embeddings to see
whether memory writes (one note at a time) and knowledge-base ingestion (batches) got
slower. `python bench/embeddings.py [--sentences N] [--blas-threads N]`.

On the 2-vCPU project machines OpenBLAS runs the model about twice as fast with one thread
as with two (its worker threads contend rather than help), so the BLAS thread count in
force is printed with the results; `--blas-threads` sets it for this run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    from core.embeddings import Embedder

_SUBJECTS = ["The deploy", "Our customer", "The on-call engineer", "This agent", "The invoice"]
_VERBS = ["failed after", "was approved by", "needs a review from", "was escalated to"]
_OBJECTS = ["the billing team", "a Slack thread", "the staging database", "Maria in support"]
_TAILS = [
    "",
    " yesterday",
    " because the migration timed out and nobody noticed the alert",
    " — see the incident notes, the dashboard and the follow-up ticket for the full story",
]


def corpus(n: int, seed: int = 7) -> list[str]:
    """Memory-note-sized sentences (roughly 8 to 35 word pieces), reproducible by seed."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
        f"{rng.choice(_TAILS)} (#{rng.randrange(10_000)})."
        for _ in range(n)
    ]


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(
    name: str,
    make: Callable[[], Embedder],
    texts: list[str],
    passage: str,
    pieces: int | None = None,
) -> None:
    embedder = make()
    load = _timed(getattr(embedder, "load", lambda: None))
    first = _timed(partial(embedder.embed, ["warm up"]))
    embedder.embed(texts[:32])

    single = [_timed(partial(embedder.embed, [t])) for t in texts]
    batches = [texts[s : s + 32] for s in range(0, len(texts), 32)]
    batched = [_timed(partial(embedder.embed, b)) for b in batches]
    long_single = [_timed(partial(embedder.embed, [passage])) for _ in range(5)]

    print(f"\n{name}  ({embedder.model_name}, dim {embedder.dimension})")
    print(f"  model load             {load * 1000:8.1f} ms   (first embed {first * 1000:.1f} ms)")
    print(f"  single, 1 per call     {len(texts) / sum(single):8.1f} sentences/s")
    print(
        f"  batched, 32 per call   {len(texts) / sum(batched):8.1f} sentences/s"
        f"   (p50 {_percentile(batched, 50) * 1000:.1f} ms per batch)"
    )
    if pieces is not None:
        print(f"  batched word pieces    {pieces / sum(batched):8.0f} pieces/s")
    print(
        f"  per sentence (single)  p50 {_percentile(single, 50) * 1000:6.2f} ms"
        f"   p99 {_percentile(single, 99) * 1000:6.2f} ms"
    )
    print(f"  256-piece passage      p50 {statistics.median(long_single) * 1000:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", type=int, default=320)
    parser.add_argument("--blas-threads", type=int, help="sets OPENBLAS_NUM_THREADS")
    args = parser.parse_args()
    if args.blas_threads is not None:
        # Only effective before NumPy is first imported, hence the imports below.
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
    from core.embeddings import HashingEmbedder, MiniLMEmbedder
    from core.embeddings.minilm import find_model_dir

    texts = corpus(args.sentences)
    passage = " ".join(corpus(40, seed=11))  # long enough to hit the 256 word-piece cap
    blas = os.environ.get("OPENBLAS_NUM_THREADS", f"unset, {os.cpu_count()} CPUs")
    print(f"{len(texts)} sentences, mean {statistics.mean(len(t) for t in texts):.0f} chars")
    print(f"OPENBLAS_NUM_THREADS: {blas}")

    model_dir = find_model_dir()
    if model_dir is not None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        pieces = sum(len(e.ids) for e in tokenizer.encode_batch(texts))
        print(f"mean {pieces / len(texts):.1f} word pieces per sentence (with [CLS]/[SEP])")
        bench("MiniLM (NumPy)", MiniLMEmbedder, texts, passage, pieces)
    else:
        print("\nMiniLM: model package not installed (make install); skipped")
    bench("Hashing fallback", HashingEmbedder, texts, passage)


if __name__ == "__main__":
    main()
