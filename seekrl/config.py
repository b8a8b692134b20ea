"""Recipe schema: YAML mapped 1:1 onto typed dataclasses.

A recipe is one YAML file whose top-level keys are the sections of `Recipe` below. Every field has a default
here (never in `cfg.get(key, default)` at the point of use) and a `help` text; `seekrl recipe show` prints
the fully resolved recipe. Unknown keys and wrong types are errors that name the file, the key and the
closest valid key. Command-line overrides are dotted `key=value` pairs (`grpo.learning_rate=1e-6`,
`rewards.0.weight=0.5`); values are read as YAML and converted to the field's type.

>>> recipe = load_recipe_dict({"grpo": {"num_generations": 8}}, overrides=["model.name_or_path=Qwen/Qwen2.5-3B"])
>>> recipe.grpo.num_generations, recipe.model.name_or_path, recipe.rewards[0].name
(8, 'Qwen/Qwen2.5-3B', 'em')
>>> load_recipe_dict({"grpo": {"num_generation": 8}})
Traceback (most recent call last):
...
seekrl.config.RecipeError: <dict>: unknown key 'grpo.num_generation'; did you mean 'grpo.num_generations'?
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class RecipeError(ValueError):
    """A recipe (file or override) that does not match the schema. The message names file, key and fix."""


def _f(default: Any, help: str, **kwargs) -> Any:
    """A dataclass field with a default and its help text (shown by `seekrl recipe show --help`)."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return field(default_factory=lambda: _copy(value), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def _copy(value):
    import copy

    return copy.deepcopy(value)


@dataclass
class LoraSection:
    """Low-rank adapters (peft). Off by default: full fine-tuning."""

    enabled: bool = _f(False, "Train LoRA adapters instead of all weights.")
    r: int = _f(16, "LoRA rank.")
    alpha: int = _f(32, "LoRA scaling numerator (scale = alpha / r).")
    dropout: float = _f(0.05, "Dropout on the LoRA input.")
    target_modules: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that get adapters.",
    )
    merge_on_save: bool = _f(False, "Also save a copy with the adapters merged into the base weights.")


@dataclass
class ModelSection:
    """The policy being trained or evaluated."""

    name_or_path: str = _f(
        "seekrl-tiny-text",
        "Hugging Face id or local directory of the policy. 'seekrl-tiny-text', 'seekrl-tiny-vl' and "
        "'seekrl-tiny-searcher' (format-trained) build the tiny offline models of seekrl.testing.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f("auto", "Weight dtype when loading.")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = _f(
        "sdpa", "Attention kernel of the model (training forward passes, prefill); see rollout.attention for decode."
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    lora: LoraSection = _f(LoraSection(), "LoRA settings.")


@dataclass
class DatasetSpec:
    """One dataset: a Hugging Face id (with config) or a local file/directory that seekrl.data reads."""

    path: str = _f("", "HF dataset id (e.g. RUC-NLPIR/FlashRAG_datasets) or a local jsonl/json/parquet file.")
    name: str | None = _f(None, "HF dataset config (e.g. nq, hotpotqa); None for local files.")
    split: str | None = _f(None, "Split; None picks test if present, else dev/validation, else train.")
    limit: int | None = _f(None, "Use only the first N records (after the loader's own filtering).")
    images_dir: str | None = _f(None, "Folder of images for layouts that reference them by id (OK-VQA).")


@dataclass
class DataSection:
    """Where questions come from."""

    train: list[DatasetSpec] = _f([], "Training datasets, concatenated in order.")
    eval: list[DatasetSpec] = _f([], "Evaluation datasets, each reported separately.")
    max_answer_chars: int | None = _f(
        80, "Natural Questions gold answers longer than this are dropped (long-answer passages), with a logged count."
    )
    shuffle_seed: int = _f(0, "Seed for shuffling the training set.")


@dataclass
class EnvSection:
    """The retrieval environment the agent searches."""

    kind: Literal["none", "index", "url"] = _f(
        "none", "none: no tools; index: an index directory searched in-process; url: a /retrieve server."
    )
    index_dir: str | None = _f(None, "Index directory (seekrl retriever build) when kind=index.")
    url: str | None = _f(None, "Base URL of a Search-R1-compatible retrieval server when kind=url.")
    api_key: str | None = _f(None, "Bearer token for the retrieval server, if it requires one.")
    topk: int = _f(3, "Passages returned per search.")
    timeout_s: float = _f(10.0, "Per-request timeout for the HTTP client.")
    max_retries: int = _f(3, "Retries (with exponential backoff) before a search becomes a tool failure.")
    retry_backoff_s: float = _f(0.5, "Delay before the first retry; it doubles on each further retry (max 8 s).")


@dataclass
class AgentSection:
    """The agent protocol: prompts, action grammar, observation format."""

    protocol: Literal["search_r1", "adasearch", "gog", "parametric", "rag"] = _f(
        "search_r1", "Which protocol renders prompts and parses actions."
    )
    adasearch_mode: Literal["adaptive", "decide", "parametric", "search", "routed"] = _f(
        "adaptive", "AdaSearch only: decide then act in one trajectory (adaptive); decide, then solve with the "
                    "parametric or search prompt (routed: inference as the stages train it); or one mode on its own."
    )
    max_turns: int = _f(4, "Maximum tool calls per trajectory before the answer is forced.")
    max_query_chars: int = _f(512, "Search queries longer than this are truncated.")


@dataclass
class RolloutSection:
    """Multi-turn generation limits and sampling."""

    max_new_tokens_per_turn: int = _f(256, "Tokens the policy may generate before an action must close.")
    max_total_tokens: int = _f(2048, "Budget for all completion tokens of a trajectory (model + observations).")
    max_obs_tokens: int = _f(512, "Observations are truncated to this many tokens.")
    attention: Literal["dense", "block_topk"] = _f(
        "dense", "Decode attention during rollouts: dense, or block top-k with the kinetics section's budget."
    )
    temperature: float = _f(1.0, "Sampling temperature for training rollouts.")
    top_p: float = _f(1.0, "Nucleus sampling threshold.")


@dataclass
class KineticsSection:
    """Kinetics cost model and block top-k sparse attention for rollouts."""

    enabled: bool = _f(False, "Report eFLOPs per rollout and let the planner set the budget below.")
    hardware: str = _f("h200", "Hardware profile for I = peak FLOP/s / bandwidth: b200, h100, h200, a100, cpu.")
    eflops_budget: float | None = _f(None, "Per-prompt eFLOPs budget for the planner; None keeps the settings below.")
    block_size: int = _f(64, "KV block size for block top-k attention.")
    topk: int = _f(16, "Blocks attended per decode step (besides sink and local window).")
    local: int = _f(128, "Most recent tokens always attended.")
    dense_layers: list[int] = _f([0], "Layers that stay dense.")
    sink_blocks: int = _f(1, "First blocks of each sequence always attended (attention sink).")
    planner_block_sizes: list[int] = _f([16, 32, 64], "Planner candidates for block_size.")
    planner_topks: list[int] = _f([8, 16, 32, 64], "Planner candidates for topk.")
    planner_max_new_tokens: list[int] = _f([256, 512, 1024, 2048], "Planner candidates for max new tokens.")
    planner_group_sizes: list[int] = _f([4, 8, 16], "Planner candidates for the group size (num_generations).")


@dataclass
class RewardSpec:
    """One weighted reward component; the total reward is the weighted sum, each component logged by name."""

    name: str = _f("em", "Reward function name in seekrl.rewards (em, f1, format, decision, ...).")
    weight: float = _f(1.0, "Weight of this component in the sum.")
    args: dict[str, Any] = _f({}, "Keyword arguments for the reward function (e.g. protocol: adasearch).")


@dataclass
class GRPOSection:
    """GRPO settings, passed through to TRL's GRPOConfig."""

    num_generations: int = _f(4, "Group size G: completions sampled per prompt.")
    beta: float = _f(0.0, "KL coefficient against the reference model (0 = no reference model).")
    epsilon: float = _f(0.2, "PPO-style clipping range.")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = _f("dapo", "Loss normalisation (TRL loss_type).")
    scale_rewards: Literal["group", "batch", "none"] = _f("group", "Advantage scaling by reward std.")
    learning_rate: float = _f(1e-6, "Peak learning rate.")
    lr_scheduler_type: str = _f("constant_with_warmup", "transformers scheduler name.")
    warmup_ratio: float = _f(0.0, "Fraction of steps spent warming up.")
    per_device_train_batch_size: int = _f(4, "Completions per device per micro-step (multiple of num_generations).")
    gradient_accumulation_steps: int = _f(1, "Micro-steps per optimizer step.")
    max_steps: int = _f(-1, "Optimizer steps; -1 uses num_train_epochs.")
    num_train_epochs: float = _f(1.0, "Epochs over the training set when max_steps is -1.")
    max_grad_norm: float = _f(1.0, "Gradient clipping.")
    logging_steps: int = _f(1, "Log every N steps.")
    save_steps: int = _f(100, "Checkpoint every N steps.")
    eval_steps: int = _f(0, "Every N steps (and after the last), evaluate on data.eval: EM, search rate, F1_aware "
                            "(labels from label.samples parametric samples); 0 disables.")
    eval_limit: int = _f(32, "Questions of data.eval used by the periodic evaluation.")
    replay_modes: list[str] = _f(
        [], "AdaSearch decide stage: stage-1 modes (parametric, search) whose solving is rehearsed in the same "
            "batches, scored by the recipe's accuracy reward (em, f1 or subem); the decision rows are scored by the "
            "decision reward alone. Training the decision alone overwrote a tiny model's solving, which shares its "
            "weights. Empty: no rehearsal.")
    replay_fraction: float = _f(0.5, "Share of the training rows that rehearse replay_modes (0 < f < 1).")
    replay_by_label: bool = _f(
        False, "Rehearse each mode only where the pseudo-labels route the agent: parametric on the questions "
               "labelled yes, search on those labelled no. Rehearsing every question in parametric mode rewards "
               "lucky guesses about people the model does not know, so it learns their facts by trial and error "
               "(quickstart seed 2: unknown people's job solve rate 0.12 -> 0.44 during decide), blurring the "
               "line the decision is learning.")
    balance_labels: bool = _f(
        False, "Decision training: repeat the questions of the rarer pseudo-label until there are as many labelled "
               "no as yes, so the label prior gets no gradient. On the quickstart (seed 2) it turned the early "
               "drift from all-yes into all-no and left the end result as it was.")


@dataclass
class RaySection:
    """Where and how wide training runs."""

    address: str | None = _f(None, "Ray cluster address; None starts an embedded ray.init() in-process.")
    num_workers: int = _f(1, "Ray Train workers (one per GPU on a cluster).")
    use_gpu: bool = _f(False, "Give each worker a GPU.")
    resources_per_worker: dict[str, float] = _f({}, "Extra resources per worker, e.g. {CPU: 4}.")
    max_failures: int = _f(0, "Worker failures tolerated before the run fails (restart from last checkpoint).")
    num_checkpoints_to_keep: int = _f(2, "Checkpoints kept (best by reward).")


@dataclass
class DeepSpeedSection:
    """DeepSpeed ZeRO for models that do not fit one device."""

    stage: Literal[0, 2, 3] = _f(0, "ZeRO stage; 0 disables DeepSpeed.")
    config_file: str | None = _f(None, "A DeepSpeed JSON config; None uses recipes/deepspeed/zero{stage}.json.")
    offload_optimizer: bool = _f(False, "Offload optimizer state to CPU memory.")
    offload_param: bool = _f(False, "Offload parameters to CPU memory (stage 3 only).")


@dataclass
class OutputSection:
    """Where results go."""

    dir: str = _f("runs/default", "Output directory for checkpoints, logs and the resolved recipe.")
    report_to: list[str] = _f(
        ["tensorboard"], "Trackers for TRL/transformers logging: tensorboard (event files in <dir>/tensorboard), wandb."
    )


@dataclass
class EvalSection:
    """`seekrl eval`: benchmarks come from data.eval, the agent from model/agent/env/rollout."""

    out_dir: str | None = _f(None, "Output directory of the evaluation; None uses output.dir/eval.")
    limit: int | None = _f(None, "Evaluate only the first N questions of each benchmark.")
    num_workers: int = _f(1, "Ray actors the questions are sharded over (one model replica each); 1 runs in-process.")
    batch_size: int = _f(16, "Questions per batched rollout, and the unit of work handed to a worker.")
    attention: list[str] = _f(
        [], "Decode attention settings to compare, e.g. [dense, 'block_topk:256']; empty uses rollout.attention."
    )
    temperature: float = _f(0.0, "Sampling temperature; 0 is greedy decoding (deterministic).")
    top_p: float = _f(1.0, "Nucleus sampling threshold when temperature > 0.")
    num_samples: int = _f(1, "Samples per question; above 1 (with temperature > 0) pass@k is reported.")
    awareness_probe: int = _f(
        0, "k parametric-mode samples per question for the F1_aware oracle label (0 = no probe, no F1_aware)."
    )
    awareness_threshold: float = _f(0.5, "Threshold p: label 'yes' (no search needed) when the solve rate >= p.")
    awareness_temperature: float = _f(1.0, "Sampling temperature of the awareness probe (as in training).")


@dataclass
class WorldSection:
    """A synthetic knowledge world (seekrl.envs.world) generated for the run: the offline quickstart's data."""

    enabled: bool = _f(False, "Generate the world into output.dir/world and train/evaluate on it: data.train, "
                              "data.eval and env default to its questions and its BM25 index.")
    num_people: int = _f(24, "Fictional people; each has 3 questions (birthplace, occupation, country of birth).")
    known_fraction: float = _f(0.5, "Share of the people whose facts the warm start is taught (the rest only search finds).")
    num_practice: int = _f(24, "Practice people: in the corpus, never asked about; the warm start's search "
                               "demonstrations are about them (see seekrl.envs.world).")
    train_phrasings: Literal[1, 2] = _f(1, "Phrasings of each training question; the held-out questions use another. "
                                        "All are taught with the known facts.")
    num_countries: int = _f(
        4, "Countries the world's 12 cities lie in. A model that knows nothing about a person can still guess their "
           "country, right about once in this many, and a guess it always makes earns a 'yes' label.")
    model_layers: int = _f(2, "Layers of the tiny base model built for the world (model seekrl-tiny-world).")


@dataclass
class SFTSection:
    """Warm start by TRL SFTTrainer on scripted trajectories (seekrl.sft); world runs only. Up to three phases, as a
    real model's reading and knowledge come from pre-training and its behaviour from fine-tuning: (1) reading
    drills alone (skipped when `reading_drills` is 0), (2) the known facts, with more drills so that reading is
    rehearsed, (3) the naive policy's trajectories mixed with copies of the facts and more drills."""

    knowledge_epochs: int = _f(60, "Phase 2: passes over the known facts (each phrasing); a tiny model needs "
                                   "dozens before it recalls them.")
    reading_drills: int = _f(0, "Phase 1: search trajectories about made-up people (seekrl.sft.reading_examples), "
                                "each answerable only by reading the retrieved passage, trained on their own before "
                                "anything else, with the prompt's instructions left out (`bare`); 0 = no phase 1.")
    knowledge_reading_drills: int = _f(0, "Phase 2: reading drills with the full search prompt mixed into the known "
                                          "facts (the tiny model carries reading over to the full prompt on these).")
    policy_reading_drills: int = _f(0, "Phase 3: reading drills mixed into the policy trajectories, so "
                                       "fine-tuning keeps the reading skill.")
    knowledge_learning_rate: float = _f(1e-3, "Phases 1 and 2 learning rate (constant after warm-up); 3e-3 is too high "
                                                    "for the tiny world model: it stalls at recalling ~40%.")
    epochs: float = _f(1.0, "Phase 3: epochs over the policy trajectories (the repeats below already repeat them).")
    learning_rate: float = _f(1e-3, "Phase 3 peak learning rate (cosine schedule).")
    batch_size: int = _f(16, "Trajectories per optimizer step.")
    p_yes: float = _f(0.5, "Probability that the naive policy's assessment is 'yes', whatever it knows.")
    knowledge_repeats: int = _f(10, "Phase 3: copies of each known fact mixed in, so phase 3 does not wash them out.")
    search_repeats: int = _f(4, "Phase 3: copies of each scripted search trajectory.")
    adaptive_repeats: int = _f(8, "Phase 3: adaptive-mode copies of each question, each with its own random assessment.")


@dataclass
class LabelSection:
    """AdaSearch pseudo-labels: each training question's parametric solve rate over k samples, thresholded."""

    samples: int = _f(8, "k: parametric-mode answers sampled per question.")
    threshold: float = _f(0.5, "p: label 'yes' (answer without search) when the solve rate >= p, else 'no'.")
    temperature: float = _f(1.0, "Sampling temperature of the k answers.")


@dataclass
class StageSpec:
    """One stage of a multi-stage run; each starts from the model the previous stage produced."""

    name: str = _f("stage", "Stage name: its outputs go to output.dir/stages/<name>.")
    kind: Literal["sft", "grpo", "label"] = _f(
        "grpo", "sft: warm start (sft section); grpo: a Ray Train GRPO run; label: solve-rate pseudo-labels of the "
                "training questions (label section), used as decision_label by later stages. In a gog recipe: sft is "
                "reflective SFT (gog.sft), label the pass-rate levels (gog.levels) that select GRPO's questions.")
    overrides: list[str] = _f([], "Dotted key=value overrides of the recipe for this stage only "
                                  "(e.g. agent.adasearch_mode=decide).")


@dataclass
class GoGLoraSection(LoraSection):
    """LoRA of the Glance-or-Gaze SFT stage: on by default, rank 8 as published."""

    enabled: bool = _f(True, "Train LoRA adapters instead of all weights (they are merged into the saved model).")
    r: int = _f(8, "LoRA rank (published: 8).")
    alpha: int = _f(16, "LoRA scaling numerator (scale = alpha / r).")


@dataclass
class GoGSFTSection:
    """Glance-or-Gaze stage 1, reflective SFT (seekrl.gog_sft): how trajectories are built, filtered, trained."""

    source: Literal["scripted", "teacher"] = _f(
        "scripted", "scripted: templates from the knowledge base where it knows the answer region; teacher: an "
                    "OpenAI-compatible VLM endpoint (teacher_url, teacher_model) plays the agent.")
    mix: dict[str, float] = _f({"gaze": 0.5, "glance_first": 0.25, "wrong_region": 0.25},
                               "Scripted variants and their probabilities: gaze at the answer region; glance first, "
                               "then gaze; gaze at a wrong region first, reflect, then gaze at the right one.")
    samples: int = _f(1, "Trajectories built per training question (before filtering).")
    bare_reading_drills: int = _f(0, "Composite world only: reading drills trained first, alone, one pass, with a "
                                     "bare prompt (only the image and the question). A drill is a gaze at the asked "
                                     "tile of a training composite whose knowledge-base entry is made up for it "
                                     "(ImageWorld.reading_drills), so its answer can only be read from the "
                                     "observation.")
    reading_drills: int = _f(0, "Composite world only: reading drills with the full prompt, spread over the SFT "
                                "epochs (each a new drill; epochs must then be a whole number).")
    min_iou: float = _f(0.5, "Filter: the last gaze must overlap the answer region (when known) with at least this IoU.")
    subem: bool = _f(False, "Filter with SubEM (a gold answer inside the answer) instead of EM.")
    teacher_url: str | None = _f(None, "Teacher: base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1.")
    teacher_model: str | None = _f(None, "Teacher: the model name the server expects.")
    teacher_api_key_env: str | None = _f(None, "Teacher: environment variable holding its API key (none if unset).")
    teacher_temperature: float = _f(0.0, "Teacher: sampling temperature.")
    teacher_max_tokens: int = _f(512, "Teacher: tokens per turn.")
    epochs: float = _f(3.0, "SFT epochs (published: 3).")
    learning_rate: float = _f(1e-4, "SFT peak learning rate (published: 1e-4), cosine schedule.")
    batch_size: int = _f(8, "Global batch: trajectories per optimizer step (published: 8).")
    per_device_batch_size: int = _f(8, "Trajectories per forward pass; gradient accumulation makes up batch_size.")
    lora: GoGLoraSection = _f(GoGLoraSection(), "LoRA of the SFT stage (published: rank 8); merged into the saved "
                                                "model. enabled: false fine-tunes all weights.")


@dataclass
class GoGLevelsSection:
    """Glance-or-Gaze stage 2, complexity-adaptive RL: each training sample's pass rate under the SFT model (k
    samples) sorts it into a level; GRPO trains on one level (seekrl.gog_stages)."""

    samples: int = _f(4, "k: rollouts sampled per training question to measure its pass rate.")
    temperature: float = _f(1.0, "Sampling temperature of the k rollouts.")
    level1_min: float = _f(0.25, "Level 1 ('solved about half the time'): level1_min <= pass rate <= level1_max.")
    level1_max: float = _f(0.75, "Above level1_max a sample counts as mastered (level 0) and is not trained on.")
    train_on: Literal["level2", "level1", "level1+2", "all"] = _f(
        "level2", "Which samples GRPO trains on: level2 (pass rate < level1_min, 'frequently failed': the "
                  "published setting), level1, both, or all (ablations).")
    accuracy: Literal["em", "subem"] = _f("em", "How a sampled answer counts as solved when measuring pass rates.")


@dataclass
class GoGSection:
    """Glance-or-Gaze (agent.protocol: gog): the image knowledge base the glance/gaze actions search, what the
    policy is shown, and the two training stages. With `world.enabled` a gog recipe generates the composite-image
    world (seekrl.envs.image_world) into output.dir/world instead of the text world: data.train, data.eval and
    image_index_dir default to its questions and its image index."""

    image_index_dir: str | None = _f(None, "Image knowledge base index (seekrl retriever build --kind image), "
                                           "searched in-process.")
    image_url: str | None = _f(None, "Base URL of a server with POST /image_search, instead of image_index_dir.")
    image_topk: int = _f(3, "Knowledge-base entries returned per glance / gaze.")
    show_crops: bool = _f(True, "Show each gaze's crop to the policy as a new image after its observation.")
    reflect_below: float | None = _f(0.8, "A best match under this similarity ends the observation with a prompt to "
                                          "look elsewhere (0.8 suits the offline descriptor); null: never.")
    world_num_train: int = _f(32, "World: training composites (4 tiles, 2 questions per tile).")
    world_num_heldout: int = _f(8, "World: held-out composites, of images never seen in training.")
    world_tile: int = _f(112, "World: tile side in pixels (a composite is 2 x tile square).")
    sft: GoGSFTSection = _f(GoGSFTSection(), "Stage 1: reflective SFT.")
    levels: GoGLevelsSection = _f(GoGLevelsSection(), "Stage 2: pass-rate levels (a `label` stage in a gog recipe).")


@dataclass
class Recipe:
    """A complete job description: one YAML file, one section per component."""

    name: str = _f("default", "Run name.")
    seed: int = _f(0, "Global random seed.")
    model: ModelSection = _f(ModelSection(), "The policy.")
    data: DataSection = _f(DataSection(), "Datasets.")
    env: EnvSection = _f(EnvSection(), "Retrieval environment.")
    agent: AgentSection = _f(AgentSection(), "Agent protocol.")
    rollout: RolloutSection = _f(RolloutSection(), "Rollout limits and sampling.")
    kinetics: KineticsSection = _f(KineticsSection(), "Cost model and sparse attention.")
    rewards: list[RewardSpec] = _f([RewardSpec()], "Weighted reward components.")
    grpo: GRPOSection = _f(GRPOSection(), "GRPO optimisation.")
    ray: RaySection = _f(RaySection(), "Ray cluster and scaling.")
    deepspeed: DeepSpeedSection = _f(DeepSpeedSection(), "DeepSpeed ZeRO.")
    output: OutputSection = _f(OutputSection(), "Outputs.")
    eval: EvalSection = _f(EvalSection(), "Evaluation (seekrl eval).")
    world: WorldSection = _f(WorldSection(), "Synthetic knowledge world (quickstart).")
    sft: SFTSection = _f(SFTSection(), "Warm-start SFT stage settings.")
    label: LabelSection = _f(LabelSection(), "Pseudo-label stage settings.")
    gog: GoGSection = _f(GoGSection(), "Glance-or-Gaze: image knowledge base, reflective SFT, pass-rate levels.")
    stages: list[StageSpec] = _f([], "Stages run in order in one job; empty runs one GRPO stage.")


# ---------------------------------------------------------------------------------------------------------------
# Conversion from plain data to the dataclasses, with errors that name file, key and the fix.


def _type_name(tp) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key, source)
            except RecipeError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"{source}: {key} must be one of {list(args)}, got {value!r}{hint}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{source}: {key} must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{source}: {key} must be a list, got {value!r}")
        return [_convert(v, args[0], f"{key}.{i}", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{source}: {key} must be a mapping, got {value!r}")
        return {str(k): _convert(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads `1e-6` (no dot) as a string; accept it as the number it means.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise RecipeError(f"{source}: {key} must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls, data: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.5)
            if close:
                hint = f"did you mean '{prefix + '.' if prefix else ''}{close[0]}'?"
            else:
                hint = f"valid keys here: {', '.join(names)}"
            raise RecipeError(f"{source}: unknown key '{key}'; {hint}")
        kwargs[k] = _convert(v, hints[k], key, source)
    return cls(**kwargs)


def _apply_override(data: dict, override: str, source: str) -> None:
    """Set one dotted `key=value` in the raw recipe data (values parsed as YAML)."""
    if "=" not in override:
        raise RecipeError(f"{source}: override {override!r} must look like key=value (e.g. grpo.beta=0.01)")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node: Any = data
    cls: Any = Recipe
    walked = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        walked.append(part)
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            names = [f.name for f in dataclasses.fields(cls)]
            if part not in names:
                close = difflib.get_close_matches(part, names, n=1, cutoff=0.5)
                if close:
                    hint = f"did you mean '{'.'.join(walked[:-1] + [close[0]])}'?"
                else:
                    hint = f"valid keys here: {', '.join(names)}"
                raise RecipeError(f"{source}: unknown key '{key}' in override; {hint}")
            field_type = typing.get_type_hints(cls)[part]
            if last:
                node[part] = value
                return
            if part not in node or node[part] is None:
                default = next(f for f in dataclasses.fields(cls) if f.name == part)
                node[part] = _to_plain(default.default_factory() if default.default_factory is not dataclasses.MISSING
                                       else default.default)
            node, cls = node[part], _strip_optional(field_type)
        elif typing.get_origin(cls) is list:
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"{source}: override {key!r}: {'.'.join(walked[:-1])} has {len(node)} items, "
                                  f"no index {part!r}")
            if last:
                node[int(part)] = value
                return
            node, cls = node[int(part)], typing.get_args(cls)[0]
        elif typing.get_origin(cls) is dict or cls is Any:
            if last:
                node[part] = value
                return
            node = node.setdefault(part, {})
            cls = typing.get_args(cls)[1] if typing.get_origin(cls) is dict else Any
        else:
            raise RecipeError(f"{source}: override {key!r}: '{'.'.join(walked[:-1])}' is a plain value, "
                              "it has no sub-keys")


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _to_plain(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def load_recipe_dict(data: dict | None, overrides: list[str] | tuple[str, ...] = (), source: str = "<dict>") -> Recipe:
    """Build a `Recipe` from plain data plus dotted overrides; raises `RecipeError` on any mismatch."""
    import copy

    data = copy.deepcopy(data) if data is not None else {}
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping of sections, got {type(data).__name__}")
    for override in overrides:
        _apply_override(data, override, source)
    return _build(Recipe, data, "", source)


def load_recipe(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe file, apply overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from None
    return load_recipe_dict(data, overrides, source=str(path))


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain nested dict of a recipe (every field, defaults included)."""
    return _to_plain(recipe)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML, in schema order."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)


def field_help(cls=Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, type, help) for every field of the schema, nested sections included."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = _strip_optional(hints[f.name])
        rows.append((key, _type_name(hints[f.name]), f.metadata.get("help", "")))
        if dataclasses.is_dataclass(tp):
            rows.extend(field_help(tp, key + "."))
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            rows.extend(field_help(typing.get_args(tp)[0], key + ".N."))
    return rows
