"""`seekrl cost`: Kinetics eFLOPs of dense vs block top-k decoding for a model, and the planner's choice.

    seekrl cost --model Qwen3-8B --prompt-len 512 --gen-len 1024,4096 --num-samples 8
    seekrl cost --model path/to/checkpoint --prompt-len 512 --gen-len 500 --turns 4 --obs-len 500
    seekrl cost --model Qwen3-4B --prompt-len 512 --gen-len 1024 --budget 5e15
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise _fail(f"--{name} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise _fail(f"--{name} needs at least one integer >= 0, got {text!r}")
    return values


def load_model_config(name_or_path: str) -> dict[str, Any]:
    """A built-in config name (Qwen3-0.6B ... Qwen3-32B, Qwen2.5-3B), a config.json, or a checkpoint directory."""
    from seekrl.kernels.kinetics import MODEL_CONFIGS

    if name_or_path in MODEL_CONFIGS:
        return MODEL_CONFIGS[name_or_path]
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        # Multimodal checkpoints keep the language model's shape under text_config.
        return config.get("text_config", config) if "num_hidden_layers" not in config else config
    raise _fail(f"unknown model {name_or_path!r}: give a config.json, a checkpoint directory, or one of "
                f"{', '.join(MODEL_CONFIGS)}")


def _e(value: float) -> str:
    return f"{value:.3e}"


def cost(
    model: Annotated[str, typer.Option(help="Built-in name (e.g. Qwen3-8B), config.json or checkpoint directory.")],
    prompt_len: Annotated[int, typer.Option(help="Prompt tokens (shared by the samples).")],
    gen_len: Annotated[str, typer.Option(help="Generated tokens, comma-separated for several rows (per turn "
                                               "with --turns).")],
    num_samples: Annotated[int, typer.Option(help="Samples per prompt (GRPO group size).")] = 1,
    hardware: Annotated[str, typer.Option(help="Hardware profile: b200, h100, h200, a100, cpu (measured).")] = "h200",
    block_size: Annotated[str, typer.Option(help="Block sizes, comma-separated.")] = "16,32,64",
    topk: Annotated[str, typer.Option(help="Top-k values, comma-separated (paired with every block size).")] = "16",
    local: Annotated[int, typer.Option(help="Local window tokens.")] = 0,
    turns: Annotated[int, typer.Option(help="Turns of a multi-turn rollout (each: gen-len + obs-len tokens).")] = 1,
    obs_len: Annotated[int, typer.Option(help="Observation tokens appended after each turn.")] = 0,
    budget: Annotated[float | None, typer.Option(help="eFLOPs budget per prompt: also print the planner's "
                                                      "choice among the recipe's default candidates.")] = None,
) -> None:
    """Print dense vs block top-k eFLOPs (Kinetics cost model) and, with --budget, the planner's choice."""
    from seekrl.config import KineticsSection
    from seekrl.kernels import kinetics

    config = load_model_config(model)
    gens = _ints(gen_len, "gen-len")
    sizes, topks = _ints(block_size, "block-size"), _ints(topk, "topk")
    if prompt_len < 0 or num_samples < 1 or turns < 1 or obs_len < 0 or local < 0 or min(sizes) < 1:
        raise _fail("--prompt-len, --obs-len, --local must be >= 0; --num-samples, --turns, --block-size >= 1")
    try:
        hw = kinetics.get_hardware(hardware)
        shape = kinetics.model_shape(config)
    except (ValueError, KeyError) as err:
        raise _fail(f"{err}") from None
    sparse = [kinetics.BlockTopK(bs, k, local) for bs in sizes for k in topks]

    typer.echo(f"model {model}: P = {shape.num_parameters:,.0f}, layers {shape.num_layers}, heads "
               f"{shape.num_heads}/{shape.num_kv_heads} (q/kv), head_dim {shape.head_dim}; hardware {hw.name} "
               f"(I = {hw.intensity:.1f}); prompt {prompt_len}, samples {num_samples}, turns {turns}"
               + (f" (+{obs_len} observation tokens each)" if turns > 1 else ""))
    header = ["gen/turn", "dense eFLOPs"] + [f"bs{s.block_size}xk{s.topk}+{s.local} (B={s.budget})" for s in sparse]
    rows = []
    for gen in gens:
        plan = [(gen, obs_len)] * turns
        dense = kinetics.trajectory_eflops(config, prompt_len, plan, num_samples, hw).eflops
        cells = [str(gen), _e(dense)]
        for s in sparse:
            value = kinetics.trajectory_eflops(config, prompt_len, plan, num_samples, hw, sparse=s).eflops
            cells.append(f"{_e(value)} ({dense / value:.2f}x)")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)))

    if budget is not None:
        section = KineticsSection()
        try:
            chosen = kinetics.plan(config, prompt_len, budget, block_sizes=section.planner_block_sizes,
                                   topks=section.planner_topks, max_new_tokens=section.planner_max_new_tokens,
                                   group_sizes=section.planner_group_sizes, local=local, hardware=hw)
        except ValueError as err:
            raise _fail(str(err)) from None
        typer.echo(f"plan for {_e(budget)} eFLOPs per prompt: block_size {chosen.block_size}, topk {chosen.topk}, "
                   f"local {chosen.local} (B={chosen.budget}), max_new_tokens {chosen.max_new_tokens}, group size "
                   f"{chosen.group_size}: {_e(chosen.eflops)} eFLOPs (dense would need {_e(chosen.dense_eflops)})")
