"""`seekrl train`: GRPO on Ray Train, one TRL GRPOTrainer per worker with the seekrl rollout engine.

Setup (on the driver, before Ray starts, so a bad recipe costs nothing): load and check the training data, bind
the reward functions, check the environment and the model path. Run: a Ray Train `TorchTrainer` whose workers
each build the policy, the retrieval client, the protocol and a `GRPOTrainer(rollout_func=...)`, report metrics
and checkpoints through `RayTrainReportCallback`, and resume from the latest Ray checkpoint when there is one.
Cleanup: rank 0 saves the final model with `save_pretrained` (LoRA merged when asked) beside the resolved recipe,
so `seekrl eval` and `seekrl serve` load it by path.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from seekrl.config import Recipe, RecipeError, recipe_to_dict, recipe_to_yaml
from seekrl.zero import (check_deepspeed, gathered_for_save, grpo_kwargs, prepare_worker, worker_env_vars,
                         wrap_rollout)

log = logging.getLogger(__name__)

FINAL_DIR = "final"
RECIPE_FILE = "recipe.yaml"


class TrainError(RuntimeError):
    """A training run that cannot start or did not finish; the message says why."""


@dataclass
class RunPlan:
    """What the driver checked before starting Ray."""

    recipe: Recipe
    rows: list[dict]
    output_dir: Path
    storage_path: Path
    model_path: str


def training_rows(recipe: Recipe, labels: dict[str, str | None] | None = None) -> list[dict]:
    """Training examples for TRL: `prompt` (the question), gold answers, the record id, and with `labels` (question
    id -> "yes"/"no", from a label stage) the `decision_label` column that `decision_reward` reads; with
    `grpo.replay_modes`, the rehearsal rows after them (`replay_rows`)."""
    from seekrl.data import load_from_spec

    if not recipe.data.train:
        raise RecipeError("data.train is empty: give at least one dataset (path, and name for Hub datasets)")
    rows = []
    for spec in recipe.data.train:
        for record in load_from_spec(spec, recipe.data.max_answer_chars):
            row = {"prompt": record.question, "golden_answers": record.answers, "id": record.id}
            if labels is not None:
                row["decision_label"] = labels.get(record.id)
            rows.append(row)
    if not rows:
        raise RecipeError("data.train has no usable records")
    if any(spec.name == "decision" for spec in recipe.rewards):
        if labels is None:
            raise RecipeError("the decision reward needs pseudo-labels: put a `label` stage before this GRPO stage")
        if all(row["decision_label"] is None for row in rows):
            raise RecipeError("no training question has a pseudo-label: the label stage labelled other questions")
    if recipe.grpo.balance_labels and labels is not None:
        rows = balanced_rows(rows, recipe.data.shuffle_seed)
    if recipe.grpo.replay_modes:
        extra = replay_rows(recipe, rows)
        for row in rows:
            row["mode"] = None
            row.setdefault("decision_label", None)
            if recipe.agent.adasearch_mode == "decide":
                row["golden_answers"] = None  # the decision reward alone scores the decision rows
        rows = rows + extra
    return rows


def balanced_rows(rows: list[dict], seed: int) -> list[dict]:
    """`grpo.balance_labels`: the rows, plus copies of the rarer label's rows (`id#copyN`, drawn in turn from a
    shuffled order) until as many rows are labelled "yes" as "no". Unlabelled rows are kept as they are."""
    import random

    by_label = {lab: [r for r in rows if r.get("decision_label") == lab] for lab in ("yes", "no")}
    if not by_label["yes"] or not by_label["no"]:
        raise RecipeError(f"grpo.balance_labels needs questions of both labels; the label stage gave "
                          f"{len(by_label['yes'])} yes and {len(by_label['no'])} no")
    rare, common = sorted(by_label.values(), key=len)
    random.Random(seed).shuffle(rare)
    copies = []
    for k in range(len(common) - len(rare)):
        source = rare[k % len(rare)]
        copies.append({**source, "id": f"{source['id']}#copy{k // len(rare) + 1}"})
    return rows + copies


REPLAY_MODES = ("parametric", "search")


def check_replay(recipe: Recipe) -> None:
    """`grpo.replay_modes` rehearses AdaSearch's stage-1 modes: it needs an accuracy reward to score them."""
    g = recipe.grpo
    if not g.replay_modes:
        return
    if recipe.agent.protocol != "adasearch":
        raise RecipeError("grpo.replay_modes rehearses AdaSearch's stage-1 modes: set agent.protocol: adasearch")
    bad = [m for m in g.replay_modes if m not in REPLAY_MODES]
    if bad:
        raise RecipeError(f"grpo.replay_modes: {bad} are not stage-1 modes; choose from {list(REPLAY_MODES)}")
    if not 0.0 < g.replay_fraction < 1.0:
        raise RecipeError(f"grpo.replay_fraction must be strictly between 0 and 1, got {g.replay_fraction}")
    from seekrl.rewards.rewards import ACCURACY_METRICS

    if not any(spec.name in ACCURACY_METRICS for spec in recipe.rewards):
        raise RecipeError("grpo.replay_modes needs an accuracy reward (em, f1 or subem) in `rewards` to score the "
                          "rehearsed answers")


def replay_rows(recipe: Recipe, rows: list[dict]) -> list[dict]:
    """Rehearsal rows for `grpo.replay_modes`: the training questions again, each with a stage-1 `mode`, so that
    they make up `grpo.replay_fraction` of all rows. Their `decision_label` is None, so the accuracy reward alone
    scores them; `training_rows` gives the main rows `mode` None (the recipe's own mode) and, when they train the
    decision, no gold answers. Both rewards give None where they do not apply.

    With `grpo.replay_by_label`, each mode rehearses only the questions whose pseudo-label routes them to it:
    parametric the "yes" ones, search the "no" ones; a mode no question is routed to is left out (a warning), and
    when that leaves none, it is an error."""
    import random

    g = recipe.grpo
    shuffled = list(rows)
    random.Random(recipe.data.shuffle_seed).shuffle(shuffled)  # the permutation depends on the length alone
    modes = list(g.replay_modes)
    pools = {mode: shuffled for mode in modes}
    if g.replay_by_label:
        routed = {"parametric": "yes", "search": "no"}
        pools = {mode: [r for r in shuffled if r.get("decision_label") == routed[mode]] for mode in modes}
        empty = [f"{mode} (no question labelled {routed[mode]!r})" for mode in modes if not pools[mode]]
        if len(empty) == len(modes):
            raise RecipeError(f"grpo.replay_by_label: nothing to rehearse: {', '.join(empty)}")
        if empty:
            # The agent never routes a question to that mode, so there is nothing of it to keep.
            log.warning("grpo.replay_by_label: not rehearsing %s", ", ".join(empty))
        modes = [mode for mode in modes if pools[mode]]
    count = round(len(rows) * g.replay_fraction / (1.0 - g.replay_fraction))
    extra = []
    for k in range(count):
        mode = modes[k % len(modes)]
        pool = pools[mode]
        row = pool[(k // len(modes)) % len(pool)]
        extra.append({**row, "id": f"{row['id']}#{mode}", "decision_label": None, "mode": mode})
    return extra


def plan_run(recipe: Recipe, resume: bool = False, labels: dict[str, str | None] | None = None) -> RunPlan:
    """Check everything a run needs that can be checked without Ray or a model; raise one clear error."""
    from seekrl.models import resolve_model_path
    from seekrl.rewards import build_reward_funcs

    build_reward_funcs(recipe.rewards)
    check_replay(recipe)
    if recipe.agent.protocol == "adasearch" and recipe.agent.adasearch_mode == "routed":
        raise RecipeError("agent.adasearch_mode routed is AdaSearch's inference (decide, then solve): train its "
                          "stages, the parametric and search modes and then decide")
    if recipe.env.kind == "index":
        if not recipe.env.index_dir or not Path(recipe.env.index_dir).is_dir():
            raise RecipeError(f"env.index_dir {recipe.env.index_dir!r} is not a directory: build one with "
                              "`seekrl retriever build`")
        # Ray workers run in their own working directory: they get absolute paths.
        recipe.env.index_dir = str(Path(recipe.env.index_dir).resolve())
    if recipe.env.kind == "url" and not recipe.env.url:
        raise RecipeError("env.kind is url but env.url is empty")
    if recipe.grpo.per_device_train_batch_size % recipe.grpo.num_generations:
        raise RecipeError(f"grpo.per_device_train_batch_size ({recipe.grpo.per_device_train_batch_size}) must be a "
                          f"multiple of grpo.num_generations ({recipe.grpo.num_generations})")
    check_deepspeed(recipe)
    output_dir = Path(recipe.output.dir).resolve()
    storage = output_dir / "ray"
    if (storage / recipe.name).exists() and not resume:
        raise TrainError(f"{storage / recipe.name} holds an earlier run: pass --resume to continue it, or set "
                         "output.dir (or name) for a new run")
    rows = training_rows(recipe, labels)
    # Resolved once here: a tiny offline model is built on the driver, not by every worker at once.
    model_path = resolve_model_path(recipe.model.name_or_path)
    if Path(model_path).exists():
        model_path = str(Path(model_path).resolve())
    if recipe.kinetics.eflops_budget is not None:
        plan_kinetics(recipe, model_path, rows)
    return RunPlan(recipe=recipe, rows=rows, output_dir=output_dir, storage_path=storage, model_path=model_path)


def plan_kinetics(recipe: Recipe, model_path: str, rows: list[dict]):
    """Let the Kinetics planner choose the attention budget, generation length and group size for the recipe's
    eFLOPs budget, at the mean prompt length of the training set (rendered by the recipe's protocol)."""
    from transformers import AutoConfig

    from seekrl.agents import make_protocol
    from seekrl.agents.trl_adapter import apply_kinetics_plan
    from seekrl.models import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    protocol = make_protocol(recipe.agent.protocol, recipe.agent.max_turns, recipe.agent.max_query_chars,
                             recipe.agent.adasearch_mode)
    lengths = [len(tokenizer.apply_chat_template(protocol.messages(r["prompt"]), tokenize=True,
                                                 add_generation_prompt=True)) for r in rows[:256]]
    chosen = apply_kinetics_plan(recipe, AutoConfig.from_pretrained(model_path), round(sum(lengths) / len(lengths)))
    log.warning("kinetics plan: block %d x top-%d (+%d local), %d new tokens, group %d: %.3g eFLOPs per prompt "
                "(dense %.3g)", chosen.block_size, chosen.topk, chosen.local, chosen.max_new_tokens,
                chosen.group_size, chosen.eflops, chosen.dense_eflops)
    if recipe.grpo.per_device_train_batch_size % recipe.grpo.num_generations:
        recipe.grpo.per_device_train_batch_size = recipe.grpo.num_generations
    return chosen


def make_client(env):
    """The retrieval client of a recipe's env section (None when the agent has no tools)."""
    from seekrl.envs.client import HTTPClient, InProcessClient
    from seekrl.envs.index import load_index

    if env.kind == "index":
        return InProcessClient(load_index(env.index_dir), default_topk=env.topk)
    if env.kind == "url":
        return HTTPClient(env.url, api_key=env.api_key, timeout_s=env.timeout_s, max_retries=env.max_retries,
                          backoff_s=env.retry_backoff_s, default_topk=env.topk)
    return None


def grpo_args(recipe: Recipe, output_dir: str, use_cpu: bool):
    """TRL GRPOConfig from the recipe's grpo section (plus the rollout length and the reward weights)."""
    from trl import GRPOConfig

    from seekrl.rewards import build_reward_funcs

    g = recipe.grpo
    _, weights = build_reward_funcs(recipe.rewards)
    return GRPOConfig(
        output_dir=output_dir,
        num_generations=g.num_generations,
        beta=g.beta,
        epsilon=g.epsilon,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        learning_rate=g.learning_rate,
        lr_scheduler_type=g.lr_scheduler_type,
        warmup_steps=g.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        per_device_train_batch_size=g.per_device_train_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        max_steps=g.max_steps,
        num_train_epochs=g.num_train_epochs,
        max_grad_norm=g.max_grad_norm,
        logging_steps=g.logging_steps,
        save_strategy="steps",
        save_steps=g.save_steps,
        save_total_limit=recipe.ray.num_checkpoints_to_keep,
        max_completion_length=recipe.rollout.max_total_tokens,
        temperature=max(recipe.rollout.temperature, 1e-6),
        reward_weights=weights,
        report_to=list(recipe.output.report_to),
        gradient_checkpointing=recipe.model.gradient_checkpointing,
        seed=recipe.seed,
        data_seed=recipe.data.shuffle_seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        # TRL defaults to bf16 autocast, which on a CPU is several times slower than float32 (DeepSpeed on CPU
        # workers sets it off too, in grpo_kwargs).
        **{"bf16": not use_cpu and recipe.model.dtype in ("auto", "bfloat16"), **grpo_kwargs(recipe, use_cpu)},
    )


def lora_config(recipe: Recipe):
    from peft import LoraConfig

    lora = recipe.model.lora
    if not lora.enabled:
        return None
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: build the policy and a GRPOTrainer, train, save (rank 0)."""
    import ray.train
    import torch
    from datasets import Dataset
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    from seekrl.agents import make_protocol
    from seekrl.agents.trl_adapter import RowsGRPOTrainer, make_rollout_func, rollout_config_from_recipe
    from seekrl.config import load_recipe_dict
    from seekrl.models import load_model, load_tokenizer
    from seekrl.rewards import build_reward_funcs

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # transformers' TensorBoard callback writes its event files here (rank 0 only).
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(config["output_dir"]) / "tensorboard")
    recipe = load_recipe_dict(config["recipe"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.manual_seed(recipe.seed)
    use_cpu = not recipe.ray.use_gpu
    prepare_worker(recipe)

    tokenizer = load_tokenizer(config["model_path"])
    model = load_model(config["model_path"], dtype=recipe.model.dtype,
                       attn_implementation=recipe.model.attn_implementation)
    a = recipe.agent
    protocol = make_protocol(a.protocol, a.max_turns, a.max_query_chars, a.adasearch_mode)
    # Rehearsed stage-1 modes (grpo.replay_modes) roll out with their own protocols.
    replay = {mode: make_protocol(a.protocol, a.max_turns, a.max_query_chars, mode) for mode in recipe.grpo.replay_modes}
    uses_tools = protocol.uses_tools or any(p.uses_tools for p in replay.values())
    client = make_client(recipe.env) if uses_tools else None
    rollout_func = make_rollout_func(protocol, client, rollout_config_from_recipe(recipe), seed=recipe.seed + rank,
                                     protocols=replay or None)
    rollout_func = wrap_rollout(rollout_func, recipe)
    funcs, _ = build_reward_funcs(recipe.rewards)

    # One HF output directory for all ranks, as in plain distributed HF training: rank 0 writes the model,
    # every rank its own RNG state, and each rank's RayTrainReportCallback reports that checkpoint.
    work_dir = Path(config["output_dir"]) / "hf"
    trainer = RowsGRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=grpo_args(recipe, str(work_dir), use_cpu),
        train_dataset=Dataset.from_list(config["rows"]),
        processing_class=tokenizer,
        rollout_func=rollout_func,
        peft_config=lora_config(recipe),
    )
    trainer.add_callback(SaveBarrierCallback())  # before the report callback: see its docstring
    trainer.add_callback(RayTrainReportCallback())
    if rank == 0:
        if config.get("eval_rows") and recipe.grpo.eval_steps > 0:
            # The evaluated agent may search even when the trained mode does not (AdaSearch's decide stage).
            eval_client = client if client is not None else make_client(recipe.env)
            trainer.add_callback(HeldoutEvalCallback(trainer, recipe, config["eval_rows"], eval_client))
        trainer.add_callback(RayProgressCallback(recipe.name))
    trainer = prepare_trainer(trainer)

    resume_from = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            local = work_dir / "resume"
            import shutil

            shutil.rmtree(local, ignore_errors=True)
            shutil.copytree(Path(ckpt_dir) / RayTrainReportCallback.CHECKPOINT_NAME, local)
            resume_from = str(local)
    trainer.train(resume_from_checkpoint=resume_from)

    with gathered_for_save(trainer, recipe):  # every rank: a collective under ZeRO-3
        if rank == 0:
            save_final(trainer, recipe, Path(config["output_dir"]))
    if client is not None:
        client.close()


def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class SaveBarrierCallback(_callback_base()):
    """Every rank waits at each checkpoint until all ranks have written their part of it. The ranks share one
    checkpoint directory and each RayTrainReportCallback copies all of it: without the barrier a fast rank copied
    while rank 0 was still writing, and the copy failed on a file that rank 0's save had meanwhile renamed away
    (`shutil.Error: ... .tmpXXXX: No such file or directory`, seen once in a quickstart run)."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()


class HeldoutEvalCallback(_callback_base()):
    """Every `grpo.eval_steps` steps and after the last one (rank 0): EM, search rate and F1_aware on held-out
    questions (seekrl.probe.agent_metrics), logged with the step's training metrics as `heldout/*`.

    An AdaSearch policy is evaluated as the routed agent (decide, then solve with the parametric or search
    prompt; seekrl.agents.routed), whichever mode the stage trains: that is the agent the stages build."""

    def __init__(self, trainer, recipe: Recipe, rows: list[dict], client):
        import copy

        self.trainer, self.rows, self.client = trainer, rows, client
        self.recipe = copy.deepcopy(recipe)
        if recipe.agent.protocol == "adasearch":
            self.recipe.agent.adasearch_mode = "routed"

    def on_step_end(self, args, state, control, **kwargs):
        every = self.recipe.grpo.eval_steps
        if state.global_step % every and state.global_step != state.max_steps:
            return
        from seekrl.probe import agent_metrics

        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        tokenizer = getattr(self.trainer.processing_class, "tokenizer", self.trainer.processing_class)
        metrics = agent_metrics(model, tokenizer, self.recipe, self.client, self.rows, seed=self.recipe.seed)
        # GRPOTrainer averages its `_metrics` into the log that follows this step (logging_steps 1).
        for key, value in metrics.items():
            self.trainer._metrics["train"][f"heldout/{key}"].append(value)
        log.warning("step %d held-out: %s", state.global_step,
                    ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))


class RayProgressCallback(_callback_base()):
    """A progress bar with ETA on the driver's console (Ray's tqdm, drawn by the driver for a remote worker)."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def on_train_begin(self, args, state, control, **kwargs):
        from ray.experimental.tqdm_ray import tqdm

        self.bar = tqdm(total=state.max_steps, desc=self.desc, unit="step")
        self.bar.update(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(1)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def save_final(trainer, recipe: Recipe, output_dir: Path) -> Path:
    """save_pretrained of the trained policy (LoRA merged when asked) plus tokenizer, recipe and history."""
    final = output_dir / FINAL_DIR
    final.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if recipe.model.lora.enabled and recipe.model.lora.merge_on_save:
        model = model.merge_and_unload()
    model.save_pretrained(final)
    trainer.processing_class.save_pretrained(final)
    (final / RECIPE_FILE).write_text(recipe_to_yaml(recipe))
    (output_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    return final


def step_table(log_history: list[dict]) -> str:
    """One line per logged step: reward, each reward component, search rate, turns, tool failures, length."""
    rows = [h for h in log_history if "reward" in h and "step" in h]
    if not rows:
        return "(no training step was logged)"
    components = sorted({k for h in rows for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    columns = ["step", "reward", *components, "rollout/search_rate", "rollout/turns", "rollout/tool_failures",
               "completions/mean_length"]
    names = [c.removeprefix("rewards/").removesuffix("/mean").removeprefix("rollout/").removeprefix("completions/")
             for c in columns]
    lines = ["  ".join(f"{n:>12s}" for n in names)]
    for h in rows:
        lines.append("  ".join(f"{h.get(c, float('nan')):12.3f}" if c != "step" else f"{h['step']:12d}"
                               for c in columns))
    return "\n".join(lines)


def eval_rows(recipe: Recipe) -> list[dict]:
    """The first `grpo.eval_limit` questions of data.eval, for the periodic held-out evaluation."""
    from seekrl.data import load_from_spec

    if recipe.grpo.eval_steps <= 0:
        return []
    if not recipe.data.eval:
        raise RecipeError("grpo.eval_steps needs held-out questions: give data.eval")
    rows = []
    for spec in recipe.data.eval:
        for record in load_from_spec(spec, recipe.data.max_answer_chars):
            rows.append({"question": record.question, "golden_answers": record.answers, "id": record.id})
    return rows[:recipe.grpo.eval_limit]


def init_ray(recipe: Recipe) -> None:
    """Connect to `ray.address`, to the job's cluster inside `seekrl submit`, or start an embedded loopback one."""
    import ray

    if not ray.is_initialized():
        env_vars = {k: v for k, v in os.environ.items() if k.startswith(("HF_", "SEEKRL_", "TRANSFORMERS_", "TRITON_"))}
        env_vars.update(worker_env_vars(recipe))
        if recipe.ray.address:
            ray.init(address=recipe.ray.address, runtime_env={"env_vars": env_vars})
        elif os.environ.get("RAY_ADDRESS"):
            # Inside a job submitted with `seekrl submit`: the job's own runtime environment applies.
            ray.init()
        else:
            # The embedded cluster listens on loopback only.
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, runtime_env={"env_vars": env_vars})


def train(recipe: Recipe, resume: bool = False, labels: dict[str, str | None] | None = None):
    """Run a recipe on Ray (embedded or at `ray.address`); returns the Ray Train `Result`.

    A recipe with `stages` runs them in order (seekrl.stages) and returns their summary instead. `labels` are
    the pseudo-labels of an earlier label stage (question id -> "yes"/"no"). A Glance-or-Gaze recipe
    (`agent.protocol: gog`) runs its stages through seekrl.gog_stages.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if recipe.agent.protocol == "gog":
        from seekrl.gog_stages import run_gog

        return run_gog(recipe, resume)

    if recipe.stages or recipe.world.enabled:
        from seekrl.stages import run_stages

        return run_stages(recipe, resume)
    plan = plan_run(recipe, resume, labels)
    held_out = eval_rows(recipe)
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    (plan.output_dir / RECIPE_FILE).write_text(recipe_to_yaml(recipe))
    init_ray(recipe)
    resources = dict(recipe.ray.resources_per_worker) or None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"recipe": recipe_to_dict(recipe), "rows": plan.rows, "output_dir": str(plan.output_dir),
                           "model_path": plan.model_path, "eval_rows": held_out},
        scaling_config=ScalingConfig(num_workers=recipe.ray.num_workers, use_gpu=recipe.ray.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=recipe.name,
            storage_path=str(plan.storage_path),
            checkpoint_config=CheckpointConfig(num_to_keep=recipe.ray.num_checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=recipe.ray.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise TrainError(f"training failed: {result.error}")
    return result
