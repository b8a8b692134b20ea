"""`seekrl eval`: agents on QA benchmarks, scored the way the papers report them, with the cost of each answer.

Setup → run → report, top to bottom:

1. Setup (everything a user can get wrong is checked here, before any model loads): benchmarks are resolved and
   loaded (`resolve_benchmark`), attention settings parsed (`parse_attention`), the retriever checked, and the
   output directory opened; questions already in `predictions.jsonl` are skipped (resume).
2. Run: the pending questions are cut into chunks of `batch_size` in input order, per attention setting and
   benchmark. Each chunk is one batched rollout on one worker: in-process for one worker, Ray actors for more
   (one model replica each). A chunk is the same batch whichever worker runs it, so greedy results do not depend
   on the number of workers. Each finished chunk is appended to `predictions.jsonl` at once.
3. Report: `predictions.jsonl` is rewritten in input order, then `summary.json`, `summary.md` and the plots.

Metrics per question are those of `seekrl.rewards` (EM, F1, SubEM on the answer inside `<answer>`; no answer
scores as the empty string). Per benchmark they are averaged over questions; "average" is the mean over
benchmarks (the papers' "Avg." column). Search rate is the fraction of questions with at least one search.

Glance-or-Gaze (`--protocol gog`, image benchmarks: the FVQA / MMSearch-R1 parquet layout such as
`lmms-lab/FVQA` or ../shared/data/multimodal/infoseek_mini_5.parquet, OK-VQA jsonl with its images folder) runs
the VLM rollout engine with the image knowledge base of `--image-retriever`; every question must have an image.
Its rows add the search rate split by action (text search / glance / gaze: the share of questions with at least
one), gazes per question and the gaze share (gazes among all tool calls) (seekrl.gog_probe).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from seekrl.data import FLASHRAG_CONFIGS, FLASHRAG_ID, DataError, QARecord, read_qa

log = logging.getLogger(__name__)

PROTOCOLS = ("search_r1", "adasearch", "parametric", "rag", "gog")
SCRIPTED_PREFIX = "scripted:"

AWARE_DEFINITION = (
    "F1_aware: the oracle label of a question is 'yes' (answerable without search) when the model's solve rate "
    "in parametric mode (k={k} samples at temperature {t}, EM against the golds) is >= p={p}, else 'no'. The "
    "agent predicts 'yes' when its assessment is yes (AdaSearch) or, for other protocols, when it made no search. "
    "F1_aware = 2TP / (2TP + FP + FN) of predicting 'yes' (seekrl.rewards.f1_aware)."
)


class EvalError(ValueError):
    """A mistake in how `seekrl eval` was called; the message names the fix."""


@dataclass
class EvalOptions:
    """Everything one evaluation needs (the CLI and a recipe both build this)."""

    model: str
    benchmarks: list[str]
    protocol: str = "search_r1"
    retriever: str | None = None
    out_dir: str = "runs/eval"
    limit: int | None = None
    data_dir: str | None = None
    adasearch_mode: str = "adaptive"
    attention: list[str] = field(default_factory=lambda: ["dense"])
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1
    awareness_probe: int = 0
    awareness_threshold: float = 0.5
    awareness_temperature: float = 1.0
    num_workers: int = 1
    gpus_per_worker: float = 0.0
    batch_size: int = 16
    topk: int = 3
    max_turns: int = 4
    max_query_chars: int = 512
    max_new_tokens_per_turn: int = 256
    max_total_tokens: int = 2048
    max_obs_tokens: int = 512
    hardware: str = "h200"
    dtype: str = "auto"
    max_answer_chars: int | None = 80
    seed: int = 0
    progress: bool = True
    # Glance-or-Gaze only: the image knowledge base (index directory or /image_search URL) and what is shown.
    image_retriever: str | None = None
    image_topk: int = 3
    show_crops: bool = True
    reflect_below: float | None = 0.8


# Options that change what a prediction is: a rerun into the same --out must keep them equal.
RUN_KEYS = ("model", "protocol", "retriever", "adasearch_mode", "temperature", "top_p", "num_samples",
            "awareness_probe", "awareness_threshold", "awareness_temperature", "topk", "max_turns",
            "max_query_chars", "max_new_tokens_per_turn", "max_total_tokens", "max_obs_tokens", "hardware", "dtype",
            "seed", "image_retriever", "image_topk", "show_crops", "reflect_below")


# --- benchmarks -------------------------------------------------------------------------------------------------

@dataclass
class Benchmark:
    name: str
    source: str
    records: list[QARecord]


_GENERIC_STEMS = {"questions", "test", "dev", "train", "validation", "data"}


def _label_of_path(path: Path) -> str:
    # multihop/questions.jsonl reads better as "multihop" than as "questions".
    return path.parent.name if path.stem.lower() in _GENERIC_STEMS and path.parent.name else path.stem


def _local_flashrag_file(data_dir: Path, config: str) -> Path | None:
    """A FlashRAG benchmark in a local folder: `{config}/test.jsonl` (the dataset repo's layout) or the flattened
    `test_{alias}.jsonl` of shared/data/qa; test before dev, as on the Hub."""
    aliases = [config] + [alias for alias, target in FLASHRAG_CONFIGS.items() if target == config and alias != config]
    for split in ("test", "dev"):
        for candidate in [data_dir / config / f"{split}.jsonl"] + [data_dir / f"{split}_{a}.jsonl" for a in aliases]:
            if candidate.is_file():
                return candidate
    return None


def resolve_benchmark(spec: str, data_dir: str | None = None) -> tuple[str, str, str | None]:
    """(label, path or Hub id, Hub config) for one `--benchmarks` entry.

    An entry is a FlashRAG name (nq, triviaqa/tq, popqa, hotpotqa, 2wikimultihopqa/2wiki, musique, bamboogle →
    `RUC-NLPIR/FlashRAG_datasets`, or the same benchmark's file in `data_dir` when there is one), a local file or
    dataset folder, a Hub id `owner/name`, or any of these as `label=...` to name its row in the report.

    >>> resolve_benchmark("tq")
    ('triviaqa', 'RUC-NLPIR/FlashRAG_datasets', 'triviaqa')
    >>> resolve_benchmark("nqq")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    seekrl.evaluate.EvalError: unknown benchmark 'nqq' (did you mean 'nq'?). Give a FlashRAG name (nq, triviaqa, ...
    """
    spec = spec.strip()
    label, _, target = spec.rpartition("=")
    label = label.strip() or None
    target = target.strip()
    path = Path(target).expanduser()
    if path.exists():
        return label or _label_of_path(path), str(path), None
    key = target.lower()
    if key in FLASHRAG_CONFIGS:
        config = FLASHRAG_CONFIGS[key]
        local = _local_flashrag_file(Path(data_dir), config) if data_dir else None
        if local is not None:
            return label or config, str(local), None
        return label or config, FLASHRAG_ID, config
    if path.suffix.lower() in (".jsonl", ".json", ".parquet") or target.startswith((".", "/", "~")):
        raise EvalError(f"benchmark file {target} does not exist; check the path")
    if target.count("/") == 1:
        return label or target.split("/")[1], target, None
    close = difflib.get_close_matches(key, list(FLASHRAG_CONFIGS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise EvalError(f"unknown benchmark {target!r}{hint}. Give a FlashRAG name ({', '.join(FLASHRAG_CONFIGS)}), a "
                    "local jsonl/json/parquet file, a Hub id owner/name, or label=PATH")


def load_benchmarks(specs: list[str], limit: int | None = None, data_dir: str | None = None,
                    max_answer_chars: int | None = 80) -> list[Benchmark]:
    """Resolve every entry first (a typo fails before anything is read), then load them; ids made unique."""
    if not specs:
        raise EvalError("no benchmarks given; pass --benchmarks nq,hotpotqa (or paths), or data.eval in a recipe")
    resolved = [resolve_benchmark(spec, data_dir) for spec in specs]
    labels = [label for label, _, _ in resolved]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise EvalError(f"benchmark name {duplicates[0]!r} is given twice; name them apart with label=PATH")
    benchmarks = []
    for label, path, config in resolved:
        try:
            result = read_qa(path, name=config, limit=limit, max_answer_chars=max_answer_chars)
        except DataError as err:
            raise EvalError(f"benchmark {label!r}: {err}") from None
        if not result.records:
            raise EvalError(f"benchmark {label!r} ({result.source}) has no questions")
        seen: dict[str, int] = {}
        for record in result.records:
            # Resume keys on the id; a file that repeats ids still gets one line per question.
            count = seen.get(record.id, 0)
            seen[record.id] = count + 1
            if count:
                record.id = f"{record.id}#{count}"
        benchmarks.append(Benchmark(label, result.source, result.records))
    return benchmarks


# --- attention budgets ------------------------------------------------------------------------------------------

def block_topk_for_budget(budget: int):
    """Block top-k settings that attend about `budget` KV tokens per decode step (plus the sink block).

    A quarter of the budget is the local window; the rest is top-k blocks of 32 tokens (budgets up to 512) or
    64 tokens (larger): block_topk:256 → local 64 + 6 x 32; block_topk:1024 → local 256 + 12 x 64.
    """
    from seekrl.kernels.attention import BlockTopKSettings

    if budget < 64:
        raise EvalError(f"block_topk budget {budget} is too small; use at least 64 KV tokens (e.g. block_topk:256)")
    block_size = 32 if budget <= 512 else 64
    local = budget // 4
    return BlockTopKSettings(block_size=block_size, topk=max(1, (budget - local) // block_size), local=local)


def parse_attention(spec: str):
    """`dense` → ("dense", None); `block_topk:BUDGET` → ("block_topk", BlockTopKSettings)."""
    spec = spec.strip()
    if spec == "dense":
        return "dense", None
    kind, _, budget = spec.partition(":")
    if kind == "block_topk" and budget.isdigit():
        return "block_topk", block_topk_for_budget(int(budget))
    raise EvalError(f"unknown attention setting {spec!r}; use dense or block_topk:BUDGET (e.g. block_topk:256)")


# --- agents and workers -----------------------------------------------------------------------------------------

def open_client(retriever: str | None, topk: int):
    """A retrieval client: an http(s) URL of a /retrieve server, or an index directory searched in-process."""
    if retriever is None:
        return None
    from seekrl.envs.client import HTTPClient, InProcessClient

    if retriever.startswith(("http://", "https://")):
        return HTTPClient(retriever, default_topk=topk)
    from seekrl.envs.index import load_index

    return InProcessClient(load_index(retriever), default_topk=topk)


def check_image_retriever(options: EvalOptions) -> None:
    """Glance-or-Gaze: fail before the model loads when the image knowledge base is missing or unusable."""
    if not options.image_retriever:
        raise EvalError("protocol 'gog' searches images: give --image-retriever INDEX_DIR (`seekrl retriever build "
                        "--kind image`) or an http(s) URL of a server with /image_search")
    from seekrl.envs.client import HTTPClient, ToolError
    from seekrl.envs.index import IndexDirError, read_manifest

    if options.image_retriever.startswith(("http://", "https://")):
        with HTTPClient(options.image_retriever, max_retries=0) as client:
            try:
                client.health()
            except ToolError as err:
                raise EvalError(f"{err}; start it with `seekrl retriever serve --image-index DIR`") from None
        return
    try:
        manifest = read_manifest(options.image_retriever)
    except IndexDirError as err:
        raise EvalError(str(err)) from None
    if manifest.get("kind") != "image":
        raise EvalError(f"--image-retriever {options.image_retriever} is a {manifest.get('kind')} index, not an "
                        "image index; build one with `seekrl retriever build --kind image`")


def check_retriever(options: EvalOptions) -> None:
    """Fail before the model loads when the protocol searches and the retriever is missing or unusable."""
    if options.protocol == "gog":
        check_image_retriever(options)
    needs = options.protocol in ("search_r1", "rag") or options.model.startswith(SCRIPTED_PREFIX) or (
        options.protocol == "adasearch" and options.adasearch_mode in ("adaptive", "search", "routed"))
    if not needs:
        return
    if not options.retriever:
        raise EvalError(f"protocol {options.protocol!r} searches: give --retriever URL (a `seekrl retriever serve` "
                        "server) or --retriever INDEX_DIR (`seekrl retriever build`)")
    from seekrl.envs.client import HTTPClient, ToolError
    from seekrl.envs.index import IndexDirError, read_manifest

    if options.retriever.startswith(("http://", "https://")):
        with HTTPClient(options.retriever, max_retries=0) as client:
            try:
                client.health()
            except ToolError as err:
                raise EvalError(f"{err}; start it with `seekrl retriever serve --index DIR`") from None
        return
    try:
        read_manifest(options.retriever)
    except IndexDirError as err:
        raise EvalError(str(err)) from None


def question_seed(seed: int, benchmark: str, qid: str, salt: str = "") -> int:
    """A per-question seed, so sampled results do not depend on batching or on which worker ran the question."""
    return zlib.crc32(f"{seed}:{benchmark}:{qid}:{salt}".encode())


class PolicyAgent:
    """A model rolled out with a protocol by `RolloutEngine`; one per worker, reused for every chunk."""

    def __init__(self, options: EvalOptions):
        import torch

        from seekrl.agents import make_protocol
        from seekrl.models import load_model, load_tokenizer

        self.options = options
        self.model = load_model(options.model, dtype=options.dtype)
        if options.gpus_per_worker > 0 and torch.cuda.is_available():
            self.model.to("cuda")
        self.model.eval()
        self.tokenizer = load_tokenizer(options.model)
        # Block top-k engines switch the model's attention in place; dense runs switch it back.
        self.base_attention = self.model.config._attn_implementation
        self.client = open_client(options.retriever, options.topk)
        self.protocol = make_protocol(options.protocol, options.max_turns, options.max_query_chars,
                                      options.adasearch_mode)

    def _engine(self, protocol, attention: str, settings, temperature: float):
        from seekrl.agents.rollout import RolloutConfig
        from seekrl.agents.routed import make_engine

        o = self.options
        if attention == "dense" and self.model.config._attn_implementation != self.base_attention:
            self.model.set_attn_implementation(self.base_attention)
        config = RolloutConfig(
            max_new_tokens_per_turn=o.max_new_tokens_per_turn, max_total_tokens=o.max_total_tokens,
            max_obs_tokens=o.max_obs_tokens, temperature=temperature, top_p=o.top_p, topk=o.topk,
            max_batch_size=max(o.batch_size, o.num_samples, o.awareness_probe), attention=attention,
            block_topk=settings, hardware=o.hardware)
        return make_engine(self.model, self.tokenizer, protocol, self.client, config, seed=o.seed)

    def run(self, benchmark: str, records: list[QARecord], attention: str, settings) -> list[tuple[list, dict]]:
        """Per record: (its sampled trajectories, extra trajectory fields such as RAG's documents)."""
        o = self.options
        questions = [r.question for r in records]
        documents = self.protocol.prepare(questions, self.client, o.topk) if o.protocol == "rag" else None
        engine = self._engine(self.protocol, attention, settings, o.temperature)
        if o.temperature <= 0:
            samples = [[t] for t in engine.run(questions)]
        else:
            samples = []
            for record in records:
                engine.generator.manual_seed(question_seed(o.seed, benchmark, record.id))
                samples.append(engine.run([record.question] * o.num_samples))
        extras = []
        for i, record in enumerate(records):
            extra = {}
            if documents is not None:
                # The one retrieval of the RAG baseline is its search.
                for traj in samples[i]:
                    traj.num_searches, traj.searches = 1, [record.question]
                extra["documents"] = documents[i]
            extras.append(extra)
        return list(zip(samples, extras))

    def probe(self, benchmark: str, records: list[QARecord]) -> list[float]:
        """Solve rate of each question in parametric mode: k sampled answers, EM against the golds."""
        from seekrl.agents import make_protocol
        from seekrl.rewards import exact_match

        o = self.options
        engine = self._engine(make_protocol("parametric", o.max_turns, o.max_query_chars), "dense", None,
                              o.awareness_temperature)
        rates = []
        for record in records:
            engine.generator.manual_seed(question_seed(o.seed, benchmark, record.id, "probe"))
            answers = [t.answer or "" for t in engine.run([record.question] * o.awareness_probe)]
            rates.append(sum(exact_match(a, record.answers) for a in answers) / len(answers))
        return rates


class EvalWorker:
    """Runs chunks of questions and scores them; in-process, or as a Ray actor (one model replica each)."""

    def __init__(self, options: EvalOptions):
        self.options = options
        if options.protocol == "gog":
            from seekrl.gog_probe import GoGEvalAgent

            self.agent = GoGEvalAgent(options)
        elif options.model.startswith(SCRIPTED_PREFIX):
            from seekrl.agents.scripted import SCRIPTED_AGENTS

            self.agent = SCRIPTED_AGENTS[options.model](open_client(options.retriever, options.topk), options.topk)
        else:
            self.agent = PolicyAgent(options)

    def run_chunk(self, attention_label: str, benchmark: str, records: list[QARecord]) -> list[dict]:
        attention, settings = parse_attention(attention_label)
        if isinstance(self.agent, PolicyAgent) or self.options.protocol == "gog":
            results = self.agent.run(benchmark, records, attention, settings)
            rates = self.agent.probe(benchmark, records) if self.options.awareness_probe else None
        else:
            results = [([t], {}) for t in self.agent.run(records)]
            rates = None
        return [score_line(attention_label, benchmark, record, samples, extra,
                           None if rates is None else rates[i], self.options)
                for i, (record, (samples, extra)) in enumerate(zip(records, results, strict=True))]


# --- scoring ----------------------------------------------------------------------------------------------------

def score_line(attention: str, benchmark: str, record: QARecord, samples: list, extra: dict,
               solve_rate: float | None, options: EvalOptions) -> dict:
    """The `predictions.jsonl` line of one question; the first sample is the prediction."""
    from seekrl.rewards import cover_exact_match, exact_match, f1_score, solve_rate_labels

    traj = samples[0]
    prediction = traj.answer or ""
    generated = traj.num_generated
    line = {
        "attention": attention, "benchmark": benchmark, "id": record.id, "question": record.question,
        "golds": record.answers, "prediction": prediction, "answered": traj.answer is not None,
        "em": exact_match(prediction, record.answers), "f1": f1_score(prediction, record.answers),
        "subem": cover_exact_match(prediction, record.answers),
        "num_searches": traj.num_searches, "num_turns": traj.num_turns, "decision": traj.decision,
        # F1_aware's prediction: the assessment where there is one, else "no search made" (seekrl.rewards).
        "aware_decision": traj.decision if traj.decision is not None else ("yes" if traj.num_searches == 0 else "no"),
        "tokens": {"prompt": len(traj.prompt_ids), "generated": generated,
                   "observation": len(traj.env_mask) - generated},
        "eflops": traj.eflops, "eflops_dense": traj.eflops_dense,
        "trajectory": {"text": traj.text, "searches": traj.searches, "stop_reason": traj.stop_reason,
                       "truncated": traj.truncated, "tool_failures": traj.tool_failures,
                       "turn_tokens": [list(t) for t in traj.turn_tokens], **extra},
        "num_images": len(record.images),
    }
    if hasattr(traj, "actions"):  # a Glance-or-Gaze rollout: its tool calls by action, and the images it was shown
        line.update(num_text_searches=traj.actions.count("search"), num_glances=traj.actions.count("glance"),
                    num_gazes=traj.actions.count("gaze"), gazes=[list(g) for g in traj.gazes],
                    images_shown=traj.num_images)
    if len(samples) > 1:
        line["samples"] = [{"prediction": t.answer or "", "em": exact_match(t.answer or "", record.answers)}
                           for t in samples]
        line["pass_at_k"] = max(s["em"] for s in line["samples"])
    if solve_rate is not None:
        line["solve_rate"] = solve_rate
        line["aware_label"] = solve_rate_labels([solve_rate], options.awareness_threshold)[0]
    return line


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def benchmark_metrics(lines: list[dict]) -> dict:
    """Averages over one benchmark's questions (see the module docstring)."""
    from seekrl.rewards import f1_aware

    metrics = {
        "n": len(lines),
        "em": _mean(x["em"] for x in lines), "f1": _mean(x["f1"] for x in lines),
        "subem": _mean(x["subem"] for x in lines),
        "search_rate": _mean(x["num_searches"] > 0 for x in lines),
        "searches": _mean(x["num_searches"] for x in lines), "turns": _mean(x["num_turns"] for x in lines),
        "answer_rate": _mean(x["answered"] for x in lines),
        "generated_tokens": _mean(x["tokens"]["generated"] for x in lines),
        "observation_tokens": _mean(x["tokens"]["observation"] for x in lines),
        "prompt_tokens": _mean(x["tokens"]["prompt"] for x in lines),
        "eflops": _mean(x["eflops"] for x in lines), "eflops_dense": _mean(x["eflops_dense"] for x in lines),
        "tool_failures": _mean(x["trajectory"]["tool_failures"] for x in lines),
    }
    if lines and all("num_gazes" in x for x in lines):
        calls = sum(x["num_searches"] for x in lines)
        metrics.update(
            text_search_rate=_mean(x["num_text_searches"] > 0 for x in lines),
            glance_rate=_mean(x["num_glances"] > 0 for x in lines),
            gaze_rate=_mean(x["num_gazes"] > 0 for x in lines), gazes=_mean(x["num_gazes"] for x in lines),
            gaze_share=sum(x["num_gazes"] for x in lines) / calls if calls else 0.0)
    if any("pass_at_k" in x for x in lines):
        metrics["pass_at_k"] = _mean(x.get("pass_at_k", x["em"]) for x in lines)
    if any("aware_label" in x for x in lines):
        metrics["f1_aware"] = f1_aware([x["aware_decision"] for x in lines], [x.get("aware_label") for x in lines])
        metrics["label_yes_rate"] = _mean(x["aware_label"] == "yes" for x in lines if "aware_label" in x)
    return metrics


def summarize(lines: list[dict], attentions: list[str], benchmarks: list[str], options: EvalOptions) -> dict:
    """summary.json: per attention setting, per benchmark metrics and their mean over benchmarks."""
    results = {}
    for attention in attentions:
        per = {b: benchmark_metrics([x for x in lines if x["attention"] == attention and x["benchmark"] == b])
               for b in benchmarks}
        average = {key: _mean(m[key] for m in per.values()) for key in per[benchmarks[0]] if key != "n"}
        average["n"] = sum(m["n"] for m in per.values())
        results[attention] = {"benchmarks": per, "average": average}
    summary = {key: getattr(options, key) for key in RUN_KEYS}
    summary.update(benchmarks=benchmarks, attention=attentions, results=results, f1_aware_definition=None)
    if options.awareness_probe:
        summary["f1_aware_definition"] = AWARE_DEFINITION.format(
            k=options.awareness_probe, t=options.awareness_temperature, p=options.awareness_threshold)
    return summary


# --- outputs ----------------------------------------------------------------------------------------------------

def _key(line: dict) -> tuple[str, str, str]:
    return line["attention"], line["benchmark"], line["id"]


def read_predictions(path: Path) -> list[dict]:
    """Lines of an existing predictions.jsonl; a last line cut short by a crash is dropped (it reruns)."""
    if not path.exists():
        return []
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            log.warning("%s: line %d is not JSON (an interrupted write); that question runs again", path, number)
    return lines


def _open_out_dir(options: EvalOptions) -> Path:
    """Create --out, or check that the evaluation stored there is this one (so a resume never mixes runs)."""
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "run.json"
    current = {key: getattr(options, key) for key in RUN_KEYS}
    if run_file.exists():
        stored = json.loads(run_file.read_text())
        differ = [k for k in RUN_KEYS if k in stored and stored[k] != current[k]]
        if differ:
            raise EvalError(f"{out} holds an evaluation with different {', '.join(differ)} "
                            f"({', '.join(f'{k}={stored[k]!r}' for k in differ)}); use another --out to keep both")
    run_file.write_text(json.dumps(current, indent=2) + "\n")
    return out


def write_markdown(summary: dict, path: Path) -> None:
    """summary.md: one table per attention setting, rows = benchmarks + average, columns = metrics."""
    columns = [("EM", "em", 3), ("F1", "f1", 3), ("SubEM", "subem", 3), ("search rate", "search_rate", 2),
               ("searches", "searches", 2), ("turns", "turns", 2), ("gen. tokens", "generated_tokens", 0),
               ("eFLOPs", "eflops", None)]
    first = next(iter(summary["results"].values()))["average"]
    if "pass_at_k" in first:
        columns.insert(3, (f"pass@{summary['num_samples']}", "pass_at_k", 3))
    if "f1_aware" in first:
        columns.append(("F1_aware", "f1_aware", 3))
    if "gaze_rate" in first:
        columns[4:4] = [("text search", "text_search_rate", 2), ("glance", "glance_rate", 2),
                        ("gaze", "gaze_rate", 2), ("gazes", "gazes", 2), ("gaze share", "gaze_share", 2)]
    out = [f"# seekrl eval: {summary['model']} ({summary['protocol']})", ""]
    for attention, result in summary["results"].items():
        out += [f"## attention: {attention}", "",
                "| benchmark | n | " + " | ".join(c[0] for c in columns) + " |",
                "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |"]
        rows = list(result["benchmarks"].items()) + [("**average**", result["average"])]
        for name, m in rows:
            cells = [f"{m[key]:.3e}" if digits is None else f"{m[key]:.{digits}f}" for _, key, digits in columns]
            out.append(f"| {name} | {m['n']} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("Average = mean over benchmarks. eFLOPs: Kinetics cost per question on the "
               f"{summary['hardware']} profile (decode; 0 for scripted agents).")
    if summary["f1_aware_definition"]:
        out += ["", summary["f1_aware_definition"]]
    path.write_text("\n".join(out) + "\n")


def _agent_label(summary: dict) -> str:
    name = summary["model"].rstrip("/").split("/")[-1]
    return name if summary["model"].startswith(SCRIPTED_PREFIX) else f"{name}, protocol {summary['protocol']}"


def _bars(summary: dict, key: str, title: str, ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = summary["benchmarks"] + ["average"]
    attentions = summary["attention"]
    width = 0.8 / len(attentions)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(benchmarks) * max(1, len(attentions) ** 0.5)), 4.2))
    for i, attention in enumerate(attentions):
        result = summary["results"][attention]
        values = [result["benchmarks"][b][key] for b in summary["benchmarks"]] + [result["average"][key]]
        xs = [j + (i - (len(attentions) - 1) / 2) * width for j in range(len(benchmarks))]
        bars = ax.bar(xs, values, width * 0.95, label=attention)
        bars[-1].set_hatch("//")  # the average is not a benchmark: set it apart
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(benchmarks)), benchmarks, rotation=20, ha="right")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{_agent_label(summary)}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if len(attentions) > 1:
        ax.legend(title="attention", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _frontier(summary: dict, path: Path) -> None:
    """EM against mean eFLOPs per question, one point per attention setting (the Kinetics frontier)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attentions = summary["attention"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name in summary["benchmarks"] + ["average"]:
        points = sorted(
            ((r["average"] if name == "average" else r["benchmarks"][name])["eflops"],
             (r["average"] if name == "average" else r["benchmarks"][name])["em"], a)
            for a, r in ((a, summary["results"][a]) for a in attentions))
        style = {"color": "black", "linewidth": 2.2, "marker": "o"} if name == "average" else \
            {"linewidth": 1, "marker": ".", "alpha": 0.7}
        ax.plot([p[0] for p in points], [p[1] for p in points], label=name, **style)
        if name == "average":
            for x, y, label in points:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ems = [r["benchmarks"][b]["em"] for r in summary["results"].values() for b in summary["benchmarks"]]
    # EM lives in [0, 1]; zoom in when every point is low so differences stay visible.
    ax.set_ylim(-0.01, min(1.02, max(0.1, 1.25 * max(ems))))
    ax.set_xscale("log")
    ax.set_xlabel(f"eFLOPs per question ({summary['hardware']} profile, log scale)")
    ax.set_ylabel("EM")
    ax.set_title(f"Accuracy vs cost across attention budgets\n{_agent_label(summary)}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_plots(summary: dict, out: Path) -> list[Path]:
    paths = [out / "em_per_benchmark.png", out / "search_rate_per_benchmark.png"]
    _bars(summary, "em", "Exact match per benchmark", "EM", paths[0])
    _bars(summary, "search_rate", "Search rate per benchmark", "questions with >= 1 search", paths[1])
    if len(summary["attention"]) > 1:
        paths.append(out / "accuracy_vs_eflops.png")
        _frontier(summary, paths[-1])
    return paths


# --- the run ----------------------------------------------------------------------------------------------------

def _check_options(options: EvalOptions) -> list[str]:
    if options.protocol not in PROTOCOLS:
        raise EvalError(f"unknown protocol {options.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if options.model.startswith(SCRIPTED_PREFIX):
        from seekrl.agents.scripted import SCRIPTED_AGENTS

        if options.model not in SCRIPTED_AGENTS:
            raise EvalError(f"unknown scripted agent {options.model!r}; choose one of {', '.join(SCRIPTED_AGENTS)}")
        if options.awareness_probe:
            raise EvalError("--awareness-probe samples a model in parametric mode; a scripted agent has none")
    if options.protocol == "gog" and options.awareness_probe:
        raise EvalError("--awareness-probe measures AdaSearch's parametric mode; it does not apply to --protocol gog")
    if options.num_samples > 1 and options.temperature <= 0:
        raise EvalError("--num-samples > 1 needs sampling: set --temperature above 0 (greedy samples are identical)")
    if options.num_workers < 1 or options.batch_size < 1:
        raise EvalError("--num-workers and --batch-size must be at least 1")
    attentions = list(dict.fromkeys(a.strip() for a in options.attention if a.strip())) or ["dense"]
    for attention in attentions:
        parse_attention(attention)
    if options.model.startswith(SCRIPTED_PREFIX) and attentions != ["dense"]:
        raise EvalError("attention budgets apply to a model; a scripted agent runs with --attention dense")
    return attentions


def _chunks(pending: list[tuple[str, str, QARecord]], size: int) -> list[tuple[str, str, list[QARecord]]]:
    """Consecutive questions of one attention setting and benchmark, at most `size` per chunk, in input order."""
    chunks: list[tuple[str, str, list[QARecord]]] = []
    for attention, benchmark, record in pending:
        if chunks and chunks[-1][:2] == (attention, benchmark) and len(chunks[-1][2]) < size:
            chunks[-1][2].append(record)
        else:
            chunks.append((attention, benchmark, [record]))
    return chunks


def _run_chunks(chunks, options: EvalOptions, on_done) -> None:
    """Run every chunk, calling `on_done(lines)` as each finishes: in-process, or over Ray actors."""
    if not chunks:
        return  # everything is in predictions.jsonl already: no model to load
    if options.num_workers == 1:
        worker = EvalWorker(options)
        for attention, benchmark, records in chunks:
            on_done(worker.run_chunk(attention, benchmark, records))
        return
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=options.num_workers, include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(num_cpus=1, num_gpus=options.gpus_per_worker)(EvalWorker)
        workers = [actor.remote(options) for _ in range(min(options.num_workers, len(chunks)))]
        queue = list(chunks)
        running = {}
        # One chunk in flight per worker; the next goes to whichever worker finishes first.
        for worker in workers:
            if queue:
                running[worker.run_chunk.remote(*queue.pop(0))] = worker
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            worker = running.pop(done[0])
            on_done(ray.get(done[0]))
            if queue:
                running[worker.run_chunk.remote(*queue.pop(0))] = worker
        for worker in workers:
            ray.kill(worker)
    finally:
        if started:
            ray.shutdown()


def evaluate(options: EvalOptions) -> dict:
    """Run the evaluation into `options.out_dir` and return the summary (also written to summary.json)."""
    from tqdm.auto import tqdm

    # Setup: every user error surfaces here, before a model loads.
    attentions = _check_options(options)
    benchmarks = load_benchmarks(options.benchmarks, options.limit, options.data_dir, options.max_answer_chars)
    for bench in benchmarks:
        if options.protocol == "gog":
            missing = [r.id for r in bench.records if not r.images]
            if missing:
                raise EvalError(f"benchmark {bench.name!r}: {len(missing)} questions have no image (first: "
                                f"{missing[0]!r}); --protocol gog evaluates image questions")
        elif any(r.images for r in bench.records):
            raise EvalError(f"benchmark {bench.name!r} has images; the text rollout engine takes text questions "
                            "only: evaluate it with --protocol gog (and --image-retriever)")
    check_retriever(options)
    out = _open_out_dir(options)
    predictions = out / "predictions.jsonl"
    existing = read_predictions(predictions)
    done = {_key(x) for x in existing}
    pending = [(a, b.name, r) for a in attentions for b in benchmarks for r in b.records
               if (a, b.name, r.id) not in done]
    total = sum(len(b.records) for b in benchmarks) * len(attentions)
    log.info("%d of %d questions to run (%d already in %s)", len(pending), total, total - len(pending), predictions)

    # Run: append each finished chunk, so an interrupted run resumes where it stopped.
    lines = list(existing)
    bar = tqdm(total=len(pending), unit="q", desc="eval", disable=not options.progress, smoothing=0.1)
    with predictions.open("a") as sink:
        def on_done(chunk_lines: list[dict]) -> None:
            for line in chunk_lines:
                sink.write(json.dumps(line, ensure_ascii=False) + "\n")
            sink.flush()
            lines.extend(chunk_lines)
            bar.update(len(chunk_lines))

        start = time.perf_counter()
        _run_chunks(_chunks(pending, options.batch_size), options, on_done)
        elapsed = time.perf_counter() - start
    bar.close()

    # Report: predictions in input order (identical files whatever the number of workers), then the summaries.
    order = {(a, b.name, r.id): i for i, (a, b, r) in
             enumerate((a, b, r) for a in attentions for b in benchmarks for r in b.records)}
    by_key = {_key(x): x for x in lines}
    selected = sorted((x for k, x in by_key.items() if k in order), key=lambda x: order[_key(x)])
    others = [x for k, x in by_key.items() if k not in order]
    tmp = predictions.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in selected + others))
    os.replace(tmp, predictions)
    summary = summarize(selected, attentions, [b.name for b in benchmarks], options)
    summary["questions_run"] = len(pending)
    summary["seconds"] = elapsed
    summary["sources"] = {b.name: b.source for b in benchmarks}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_markdown(summary, out / "summary.md")
    write_plots(summary, out)
    return summary


def options_from_recipe(recipe, out_dir: str | None = None) -> EvalOptions:
    """EvalOptions for `seekrl eval RECIPE`: model, data.eval, env, agent, rollout, kinetics and eval sections."""
    env = recipe.env
    retriever = {"index": env.index_dir, "url": env.url}.get(env.kind)
    benchmarks = []
    for spec in recipe.data.eval:
        if spec.name or spec.split or spec.images_dir:
            raise EvalError(f"data.eval entry {spec.path!r}: seekrl eval takes a path or a benchmark name per entry; "
                            "write a FlashRAG config as its name (path: nq) instead of path + name/split")
        benchmarks.append(spec.path)
    if recipe.rollout.attention == "block_topk" and not recipe.eval.attention:
        raise EvalError("rollout.attention is block_topk: list the budgets to evaluate in eval.attention "
                        "(e.g. [dense, 'block_topk:256'])")
    ev = recipe.eval
    gog = recipe.gog
    return EvalOptions(
        image_retriever=(gog.image_url or gog.image_index_dir) if recipe.agent.protocol == "gog" else None,
        image_topk=gog.image_topk, show_crops=gog.show_crops, reflect_below=gog.reflect_below,
        model=recipe.model.name_or_path, benchmarks=benchmarks, protocol=recipe.agent.protocol, retriever=retriever,
        out_dir=out_dir or ev.out_dir or str(Path(recipe.output.dir) / "eval"), limit=ev.limit,
        adasearch_mode=recipe.agent.adasearch_mode, attention=list(ev.attention) or ["dense"],
        temperature=ev.temperature, top_p=ev.top_p, num_samples=ev.num_samples,
        awareness_probe=ev.awareness_probe, awareness_threshold=ev.awareness_threshold,
        awareness_temperature=ev.awareness_temperature, num_workers=ev.num_workers,
        gpus_per_worker=1.0 if recipe.ray.use_gpu else 0.0, batch_size=ev.batch_size, topk=env.topk,
        max_turns=recipe.agent.max_turns, max_query_chars=recipe.agent.max_query_chars,
        max_new_tokens_per_turn=recipe.rollout.max_new_tokens_per_turn,
        max_total_tokens=recipe.rollout.max_total_tokens, max_obs_tokens=recipe.rollout.max_obs_tokens,
        hardware=recipe.kinetics.hardware, dtype=recipe.model.dtype, max_answer_chars=recipe.data.max_answer_chars,
        seed=recipe.seed)
