"""What the entry points print: config errors on one line (exit code 2), without known third-party noise; the
checks that need no torch, Lightning or MLflow, made before Hydra writes anything.

Light on purpose (no torch, Lightning or MLflow import): a config that does not compose, or names a data folder,
checkpoint, file or MLflow store that is not there, fails at once and leaves nothing behind.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from idclab.config.messages import one_line
from idclab.verbosity import set_verbose

STARTED = time.time()  # when the entry point started (before Hydra made any folder)
# (logger, message fragment): records dropped from the project's own runs
DROPPED_LOG_RECORDS = (
    ("pytorch_lightning.utilities.rank_zero", "💡 Tip:"),  # the litlogger advertisement
    ("mlflow.pyfunc", "Validating input example against model signature"),  # every logged model
)
# (category, start of the message): third-party warnings every run gets, about nothing the user can change
IGNORED_WARNINGS = (
    (FutureWarning, "`isinstance(treespec, LeafSpec)` is deprecated"),  # Lightning on torch >= 2.10
    (UserWarning, "The specified dataset source can be interpreted in multiple ways"),  # MLflow log_input
    (UserWarning, "Hint: Inferred schema contains integer column(s)"),  # MLflow: uint8 patches never miss values
)
QUIET_LOGGERS = ("mlflow.system_metrics.system_metrics_monitor",)  # "started/stopped monitoring" on every run


class DropMessages(logging.Filter):
    """Drops the records whose message contains a given fragment."""

    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_third_party() -> None:
    """Silence the known third-party noise listed above, each by its own filter (idempotent)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # download bars in every log
    for category, start in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(start), category=category)
    for name, fragment in DROPPED_LOG_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) and f.fragment == fragment for f in logger.filters):
            logger.addFilter(DropMessages(fragment))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def leaf_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config (groups and their settings), Hydra's own aside."""
    if isinstance(node, dict):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if name != "hydra":
                yield name
                yield from leaf_keys(value, f"{name}.")


def close_key(wanted: str, keys: list[str]) -> str | None:
    """The key meant by a mistyped one: the closest by spelling (`trainer.max_epoch` -> `trainer.max_epochs`), or
    the only key ending in the typed name (`lr` -> `optim.lr`)."""
    close = difflib.get_close_matches(wanted, keys, n=1, cutoff=0.8)
    if close:
        return close[0]
    ending = [key for key in keys if key.endswith(f".{wanted}")]
    return ending[0] if len(ending) == 1 else None


def explain(error: ConfigCompositionException | OverrideParseException) -> str:
    """Hydra's composition error as one line, with the key or option the user probably meant."""
    text = str(error)
    missing = re.match(r"Could not override '([^']+)'", text)
    cause = error.__cause__
    if missing and isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.parent_node is not None:
        key = missing.group(1)
        root = OmegaConf.to_container(cause.parent_node._get_root(), resolve=False)
        meant = close_key(key, list(leaf_keys(root)))
        hint = f": did you mean {meant}?" if meant else ""
        return f"{key} is not a key of the config{hint} (+{key}=VALUE would add it)"
    option = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    listed = re.search(r"Available options in '[^']+':\n((?:\t[^\n]+\n?)+)", text)
    if option and listed:
        group, name = option.groups()
        close = difflib.get_close_matches(name, [o.strip() for o in listed.group(1).splitlines()], n=1, cutoff=0.6)
        if close:
            return f"{one_line(error)}; did you mean {group}={close[0]}?"
    return one_line(error)


def fail(message: str) -> NoReturn:
    """The user's mistake: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_hydra(main: Callable[[], object], conf_dir: Path, config_name: str) -> None:
    """Run a `@hydra.main` entry point after `check_first`; a config that does not compose (unknown group, option or
    key, bad override syntax) is one line on stderr and exit code 2, like every other error the user can fix."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing and exiting with code 1
    try:
        check_first(conf_dir, config_name, sys.argv[1:])
        main()
    except (ConfigCompositionException, OverrideParseException) as error:
        print(f"error: {explain(error)}", file=sys.stderr)
        raise SystemExit(2) from error
    except Exception as error:
        if type(error).__name__ != "JobFailed":  # a sweep job's mistake (idclab.cli), printed when the job stopped
            raise
        raise SystemExit(2) from error


LAUNCHER_KEYS = ("hydra/launcher", "hydra.launcher.")  # Hydra settings composed for `check_launcher_shape`


def check_first(conf_dir: Path, config_name: str, argv: list[str]) -> None:
    """Compose the command line's config and make `first_checks` on it, before Hydra makes an output folder or
    instantiates its callbacks (the sweep's imports MLflow and Lightning); in a multirun, then `check_sweep_jobs`.
    Hydra's own flags (--help, --cfg, --info, ...) are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    if any((args.help, args.hydra_help, args.cfg, args.info, args.shell_completion, args.config_path,
            args.config_dir, args.config_name, args.experimental_rerun)):
        return
    overrides = OverridesParser.create().parse_overrides(args.overrides)
    kept = [o.input_line for o in overrides if not o.is_sweep_override()
            and (not o.key_or_group.startswith("hydra") or o.key_or_group.startswith(LAUNCHER_KEYS))]
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        config = compose(config_name, overrides=kept, return_hydra_config=True)
        HydraConfig.instance().set_config(config)  # `${hydra:...}` in the paths resolves through it (Hydra resets it)
        set_verbose(bool(config.get("verbose", False)))  # from the start: a sweep's callbacks open the store first
        skip = {o.key_or_group for o in overrides if o.is_sweep_override()}
        first_checks(config, skip | set(OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}))
        if args.multirun and config_name == "train":
            if config.get("resume"):
                fail(f"resume={config.resume} continues one run: run it without -m (a study's jobs continue when its "
                     "command is run again)")
            check_search_direction(config, overrides)
            check_launcher_shape(config)
        if args.multirun and config_name == "train" and OmegaConf.select(config, "study.name") is None:
            check_sweep_jobs(config_name, config, args.overrides)


def check_launcher_shape(config: DictConfig) -> None:
    """A SLURM launcher's tasks per node and nodes must be the trainer's devices and nodes: Lightning reads the
    SLURM environment and refuses a difference in every job, after it was queued."""
    launcher, trainer = config.hydra.launcher, config.trainer
    tasks, nodes = launcher.get("tasks_per_node"), launcher.get("nodes")
    devices, num_nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    if isinstance(tasks, int) and isinstance(devices, int) and tasks != devices:
        fail(f"hydra.launcher.tasks_per_node={tasks} but trainer.devices={devices}: Lightning starts one process per "
             "SLURM task and refuses the difference in every job; use hydra/launcher=slurm_1gpu for one-device jobs "
             "(studies, sweeps, ensembles, cross-validation), or set both")
    if isinstance(nodes, int) and isinstance(num_nodes, int) and nodes != num_nodes:
        fail(f"hydra.launcher.nodes={nodes} but trainer.num_nodes={num_nodes}: set hydra.launcher.nodes={num_nodes}")


def check_search_direction(config: DictConfig, overrides: list[Override]) -> None:
    """A sweeper that optimises (Optuna's `direction`) must go the way checkpoint.mode says the score train.py
    returns (checkpoint.monitor's best) is better: exit 2 with one line otherwise."""
    given = {o.key_or_group: o.value() for o in overrides if not o.is_sweep_override()}
    direction = given.get("hydra.sweeper.direction", OmegaConf.select(config, "hydra.sweeper.direction"))
    wanted = {"max": "maximize", "min": "minimize"}.get(OmegaConf.select(config, "checkpoint.mode"))
    if isinstance(direction, str) and wanted and direction != wanted:
        fail(f"hydra.sweeper.direction={direction} but checkpoint.monitor={config.checkpoint.monitor} is better "
             f"when {'higher' if wanted == 'maximize' else 'lower'} (checkpoint.mode={config.checkpoint.mode}): add "
             f"hydra.sweeper.direction={wanted}")


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_sweep_jobs(config_name: str, config: DictConfig, arguments: list[str]) -> None:
    """Compose and validate every job of a multirun under Hydra's basic sweeper (each combination of the swept
    values) before the sweep opens its MLflow run: the first job that cannot work is one line, exit 2, naming its
    swept values when the mistake is that job's alone. A study's sweeper checks its own jobs; under another sweeper
    (Optuna) only the config its jobs share is checked. Imports torch: building a timm model is part of the check."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from idclab.config.registry import OptionError
    from idclab.config.validation import ConfigError, job_view, validate_train_config
    from idclab.data.layout import DataLayoutError

    if (OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER
            or any(a.lstrip("+~").startswith("hydra/sweeper=") for a in arguments)):
        try:  # another sweeper draws its jobs itself: what they share (the swept keys at their defaults) is checked
            validate_train_config(job_view(config), start=not config.get("resume"))
        except (ConfigError, OptionError, DataLayoutError) as error:
            fail(str(error))
        return
    params = [f"{key}={value}" for key, value in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()]
    try:
        parsed = OverridesParser.create(GlobalHydra.instance().config_loader()).parse_overrides([*params, *arguments])
        (jobs,) = BasicSweeper.split_arguments(parsed, None)
    except HydraException:  # a sweep the basic sweeper refuses: Hydra says so in its own words
        return
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    checked: dict[tuple[str, ...], str | None] = {}  # jobs that differ only in an integer seed: checked once

    def problem(job: list[str]) -> str | None:
        key = tuple(o for o in job if not re.fullmatch(r"[+~]?seed=-?\d+", o))
        if key not in checked:
            try:
                composed = compose(config_name, overrides=[o for o in job if not o.startswith("hydra")],
                                   return_hydra_config=True)
                validate_train_config(job_view(composed), start=not composed.get("resume"))
                checked[key] = None
            except (ConfigError, OptionError, DataLayoutError) as error:
                checked[key] = str(error)
        return checked[key]

    for index, job in enumerate(jobs):
        message = problem(job)
        if message is None:
            continue
        if len(jobs) > 1 and problem(jobs[index - 1 if index else 1]) != message:  # this job's own mistake
            message = f"{' '.join(o for o in job if o.split('=', 1)[0].lstrip('+~') in swept)}: {message}"
        fail(message)


def first_checks(config: DictConfig, skip: set[str] | frozenset[str] = frozenset()) -> None:
    """What can be checked before any import of torch, Lightning or MLflow: the data folders exist, and for
    evaluate.py the checkpoint, the files to predict and the MLflow store it reads from (keys in `skip`, swept,
    aside). Exit 2 with one line."""
    from idclab.data.layout import DataLayoutError, require_root

    roots = []
    data, split = config.get("data") or {}, config.get("split") or {}
    if not {"data", "data.root"} & skip and (data.get("source", "synthetic") != "synthetic" or data.get("root")):
        roots.append(data.get("root"))
    if not {"split", "split.root"} & skip and split.get("root"):
        roots.append(split.get("root"))
    try:
        for root in roots:
            require_root(root)
    except DataLayoutError as error:
        fail(str(error))
    if "select" in config:  # evaluate.py
        check_evaluate_inputs(config)


def check_evaluate_inputs(config: DictConfig) -> None:
    """evaluate.py's checkpoint and files to predict exist; without a checkpoint, the MLflow store it selects from."""
    from idclab.tracking.store import RunNotFoundError, require_store

    if config.ckpt_path:
        if not Path(config.ckpt_path).expanduser().is_file():
            fail(f"checkpoint {Path(config.ckpt_path).expanduser().resolve()} does not exist")
    else:
        try:
            require_store(config.logger.tracking_uri)
        except RunNotFoundError as error:
            fail(str(error))
    inputs = [config.predict] if isinstance(config.predict, str) else list(config.predict or [])
    if inputs and not any(Path(str(item)).expanduser().exists() for item in inputs):
        fail(f"predict: no file to predict in {', '.join(map(str, inputs))} (missing)")
