"""`seekrl eval`: evaluate an agent on QA benchmarks (EM, F1, SubEM, search behaviour, eFLOPs, F1_aware).

    seekrl eval --model PATH --benchmarks nq,hotpotqa --retriever http://127.0.0.1:8000 --protocol search_r1
    seekrl eval --model PATH --benchmarks nq,triviaqa --data-dir ../shared/data/qa --protocol parametric
    seekrl eval --model scripted:reader --benchmarks ../shared/data/multihop/questions.jsonl --retriever INDEX_DIR
    seekrl eval --model PATH --protocol gog --benchmarks ../shared/data/multimodal/infoseek_mini_5.parquet \
        --image-retriever IMAGE_INDEX_DIR
    seekrl eval recipes/eval_search_r1.yaml eval.limit=50

Heavy libraries (torch, transformers, ray) load only when the command runs, so `seekrl --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def eval_command(
    recipe: Annotated[Path | None, typer.Argument(
        help="A recipe YAML: model, data.eval, env, agent, rollout and eval sections. Options given below "
             "override it.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Dotted key=value recipe overrides after RECIPE, e.g. eval.limit=50.")] = None,
    model: Annotated[str | None, typer.Option(
        help="Checkpoint directory or Hub id of the policy; seekrl-tiny-text for the tiny offline model; "
             "scripted:reader for the no-model reader that answers a gold string found in the retrieved passages.",
        rich_help_panel="What to evaluate")] = None,
    benchmarks: Annotated[str | None, typer.Option(
        help="Comma-separated: FlashRAG names (nq, triviaqa, popqa, hotpotqa, 2wikimultihopqa, musique, bamboogle "
             "→ RUC-NLPIR/FlashRAG_datasets, test split else dev), local jsonl/json/parquet files, Hub ids, or "
             "label=PATH to name a row.", rich_help_panel="What to evaluate")] = None,
    protocol: Annotated[str | None, typer.Option(
        help="search_r1 | adasearch | parametric (answer directly, no retrieval) | rag (retrieve top-k for the "
             "question once, then answer) | gog (Glance-or-Gaze on image questions; needs --image-retriever).",
        rich_help_panel="What to evaluate")] = None,
    retriever: Annotated[str | None, typer.Option(
        help="http(s) URL of a /retrieve server (seekrl retriever serve) or an index directory (seekrl retriever "
             "build) searched in-process.", rich_help_panel="What to evaluate")] = None,
    image_retriever: Annotated[str | None, typer.Option(
        help="Glance-or-Gaze: the image knowledge base the glance/gaze actions search, an image index directory "
             "(seekrl retriever build --kind image) or an http(s) URL of a server with /image_search.",
        rich_help_panel="What to evaluate")] = None,
    data_dir: Annotated[str | None, typer.Option(
        help="Folder with local copies of the FlashRAG benchmarks ({name}/test.jsonl or test_{name}.jsonl); "
             "names found there are read from it instead of the Hub.", rich_help_panel="What to evaluate")] = None,
    adasearch_mode: Annotated[str | None, typer.Option(
        help="AdaSearch only: adaptive | routed (decide, then the parametric or search prompt) | search | "
             "parametric | decide.", rich_help_panel="What to evaluate")] = None,
    limit: Annotated[int | None, typer.Option(help="First N questions of each benchmark.",
                                              rich_help_panel="What to evaluate")] = None,
    out: Annotated[str | None, typer.Option(
        help="Output folder: predictions.jsonl, summary.json, summary.md, PNG plots. A rerun into the same "
             "folder skips the questions already there.", rich_help_panel="Outputs")] = None,
    attention: Annotated[str | None, typer.Option(
        help="Comma-separated decode attention settings, each a full pass: dense, block_topk:BUDGET (about BUDGET "
             "KV tokens per step: a quarter local window, the rest top-k blocks of 32 (<= 512) or 64 tokens). "
             "Several give an accuracy-vs-eFLOPs plot.", rich_help_panel="Cost")] = None,
    hardware: Annotated[str | None, typer.Option(
        help="Kinetics hardware profile for eFLOPs: b200, h100, h200, a100, cpu.", rich_help_panel="Cost")] = None,
    temperature: Annotated[float | None, typer.Option(
        help="0 (default) is greedy decoding, deterministic; above 0 samples.", rich_help_panel="Decoding")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus threshold when sampling.",
                                                rich_help_panel="Decoding")] = None,
    num_samples: Annotated[int | None, typer.Option(
        help="Samples per question (with --temperature > 0); reports pass@k.", rich_help_panel="Decoding")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the per-question sampling streams.",
                                             rich_help_panel="Decoding")] = None,
    awareness_probe: Annotated[int | None, typer.Option(
        help="k: answer each question k times in parametric mode; the solve rate against --awareness-threshold "
             "gives the oracle label for F1_aware (0 = no probe).", rich_help_panel="F1_aware")] = None,
    awareness_threshold: Annotated[float | None, typer.Option(
        help="p: the label is 'yes' (no search needed) when the parametric solve rate >= p.",
        rich_help_panel="F1_aware")] = None,
    num_workers: Annotated[int | None, typer.Option(
        help="Ray actors to shard questions over (one model replica each); 1 runs in-process. Results are the "
             "same for any number.", rich_help_panel="Scale-out")] = None,
    gpus_per_worker: Annotated[float | None, typer.Option(
        help="GPUs per Ray actor (1 on a GPU cluster).", rich_help_panel="Scale-out")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Questions per batched rollout (the unit of work a worker takes).", rich_help_panel="Scale-out")] = None,
    topk: Annotated[int | None, typer.Option(help="Passages per search.", rich_help_panel="Limits")] = None,
    max_turns: Annotated[int | None, typer.Option(help="Tool calls per question.", rich_help_panel="Limits")] = None,
    max_total_tokens: Annotated[int | None, typer.Option(
        help="Completion tokens per question (generated + observations).", rich_help_panel="Limits")] = None,
    max_new_tokens_per_turn: Annotated[int | None, typer.Option(
        help="Tokens per turn before an action must close.", rich_help_panel="Limits")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Evaluate an agent on QA benchmarks: EM/F1/SubEM, searches, turns, tokens, eFLOPs and F1_aware.

    Writes predictions.jsonl (one line per question, as it goes; a rerun resumes), summary.json, summary.md
    (rows = benchmarks + average) and plots: EM and search rate per benchmark, and accuracy vs eFLOPs when several
    --attention settings run.
    """
    import dataclasses

    from seekrl.config import RecipeError, load_recipe
    from seekrl.evaluate import EvalError, EvalOptions, evaluate, options_from_recipe

    given = {"model": model, "protocol": protocol, "retriever": retriever, "image_retriever": image_retriever,
             "data_dir": data_dir,
             "adasearch_mode": adasearch_mode, "limit": limit, "out_dir": out, "hardware": hardware,
             "temperature": temperature, "top_p": top_p, "num_samples": num_samples, "seed": seed,
             "awareness_probe": awareness_probe, "awareness_threshold": awareness_threshold,
             "num_workers": num_workers, "gpus_per_worker": gpus_per_worker, "batch_size": batch_size,
             "topk": topk, "max_turns": max_turns, "max_total_tokens": max_total_tokens,
             "max_new_tokens_per_turn": max_new_tokens_per_turn}
    given = {key: value for key, value in given.items() if value is not None}
    if benchmarks is not None:
        given["benchmarks"] = _split(benchmarks)
    if attention is not None:
        given["attention"] = _split(attention)
    try:
        if recipe is not None:
            options = dataclasses.replace(options_from_recipe(load_recipe(recipe, overrides or [])), **given)
        else:
            if overrides:
                raise EvalError(f"overrides {overrides} need a RECIPE before them")
            if "model" not in given or "benchmarks" not in given:
                raise EvalError("give --model and --benchmarks (or a RECIPE); see seekrl eval --help")
            options = EvalOptions(**given)
        options.progress = not quiet
        summary = evaluate(options)
    except (EvalError, RecipeError) as err:
        raise _fail(str(err)) from None
    typer.echo(Path(options.out_dir, "summary.md").read_text(), nl=False)
    typer.echo(f"{summary['questions_run']} questions in {summary['seconds']:.1f} s; outputs in {options.out_dir}")
