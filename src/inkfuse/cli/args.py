"""The argument layer every command group shares: numbers and their ranges, output paths, the
train grammar (`RECIPE --set a.b=c --max-minutes M --out DIR --quiet`), conditions and prompts,
and the image files commands read and write.

Each check lives here once, so a flag means the same and fails the same way in every command:
a mistake is a `ConfigError` (or `DataError` for a file) with a one-line message naming the
flag, which `main` prints as `inkfuse: error: ...` with exit status 1. Numbers are checked
while parsing (`number`), by an argparse action rather than `type=`, because argparse turns a
`type=` failure into its usage text and exit status 2 and does not know our ranges.

Importing this module does not import torch: the parser is built on every call, `--help`
included. The functions that make tensors import it when they run.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inkfuse.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np
    import torch

# --- numbers --------------------------------------------------------------------------------


class _Number(argparse.Action):
    """Parse a flag's text as `kind` (or, with `many`, a comma-separated list of them) and check
    each value against [lo, hi] (lo excluded with `lo_open`), naming the flag in the error."""

    def __init__(self, option_strings: list[str], dest: str, *, kind: type, lo: float | None,
                 hi: float | None, lo_open: bool, many: bool, most: float | None,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.kind, self.lo, self.hi, self.lo_open, self.many = kind, lo, hi, lo_open, many
        self.most = most

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        flag = option_string or self.dest
        items = [v.strip() for v in str(values).split(",") if v.strip()] if self.many else [values]
        parsed = [self._one(flag, text, values) for text in items]
        if not parsed:
            raise ConfigError(f"{flag} expects comma-separated numbers, got {values!r}")
        setattr(namespace, self.dest, parsed if self.many else parsed[0])

    def _one(self, flag: str, text: str, whole: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            what = ("comma-separated numbers" if self.many
                    else "an integer" if self.kind is int else "a number")
            raise ConfigError(f"{flag} expects {what}, got {whole!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {text}")
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        if low or (self.hi is not None and value > self.hi):
            raise ConfigError(f"{flag} must be {self._range()}, got {text}")
        if self.most is not None and value > self.most:
            raise ConfigError(f"{flag} must be at most {self._text(self.most)}, got {text}")
        return value

    def _text(self, v: float) -> str:
        return f"{v:g}" if self.kind is float else str(int(v))

    def _range(self) -> str:
        lo, hi = (None if v is None else self._text(v) for v in (self.lo, self.hi))
        if lo is not None and hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}]"
        if lo is not None:
            return f"{'greater than' if self.lo_open else 'at least'} {lo}"
        return f"at most {hi}"


def number(kind: type = int, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, many: bool = False, most: float | None = None
           ) -> Callable[..., argparse.Action]:
    """An argparse `action=` for a numeric flag: `kind` (int or float), finite, in [lo, hi];
    `many` reads a comma-separated list (`--guidance 0,1,2`) into a list. `most` is a sanity
    cap rather than part of the meaning (`--n` at most 100,000): its error says "at most",
    and a value below `lo` still reads "must be at least lo".

        p.add_argument("--steps", action=number(int, lo=1), default=None)
        p.add_argument("--strength", action=number(float, lo=0, hi=1, lo_open=True))

    A default is taken as given (it is ours, not the user's). Every numeric flag has a range:
    one without `lo` or `hi` is a mistake of ours, refused when the parser is built. `None`
    (the usual default) means "not given"; a command tests `is None`, never truthiness, so a
    0 is never swapped for a default."""
    if lo is None and hi is None and most is None:
        raise TypeError("number(...) needs a range: give lo, hi or most")
    return functools.partial(_Number, kind=kind, lo=lo, hi=hi, lo_open=lo_open, many=many,
                             most=most)


# the upper ends of the ranges the commands share: beyond them a run would only exhaust memory
# or time, or overflow an int64 (seeds, class ids)
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
N_MAX = 100_000  # samples in one command (eval's --n: more)
STEPS_MAX = 100_000  # sampler steps (a schedule's T is at most this)
GUIDANCE_MAX = 1000.0


class LazyHelp(str):
    """Help text completed only when argparse formats it, i.e. for `--help`.

    Naming a registry's entries (samplers, metrics) in help means importing the registry, and so
    torch; doing that on every command would cost two seconds before `inkfuse --help` answers.
    argparse fills a help string with `help % params`, which this class intercepts."""

    def __new__(cls, text: Callable[[], str]) -> LazyHelp:
        self = super().__new__(cls, "…")
        self._text = text
        return self

    def __mod__(self, params: Any) -> str:
        return self._text() % params


def _sampler_help() -> str:
    from inkfuse.diffusion.samplers import SAMPLERS

    return f"{', '.join(SAMPLERS)} (default: the recipe's)"


SAMPLER_HELP = LazyHelp(_sampler_help)


# --- output paths ---------------------------------------------------------------------------


def out_path(path: str | Path, *suffixes: str, flag: str = "--out") -> Path:
    """`path` if it ends in one of `suffixes` (e.g. ".png", ".npz") and can be written.

    Called before any slow work, so a typo costs nothing: the suffix is known (the writers pick
    the format from it), the path is not a folder nor a read-only file, and its nearest existing
    folder is a folder we may write in. Nothing is created here: the writer (`io.atomic_path`)
    makes missing folders only when it writes, so a command that fails leaves none behind."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"{flag} {path}: use a file ending in {', '.join(suffixes)}")
    if out.is_dir():
        raise ConfigError(f"{flag} {path} is a folder: give a file path inside it, e.g. "
                          f"{out / ('out' + suffixes[0])}")
    if out.exists() and (not out.is_file() or not os.access(out, os.W_OK)
                         or not out.stat().st_mode & 0o222):
        raise ConfigError(f"{flag} {path} exists and is read-only: make it writable "
                          "(chmod u+w) or choose another path")
    folder = out.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: {folder} is a file, not a folder; choose another "
                          "path")
    _check_writable(folder, f"{flag} {path}")
    return out


def _check_writable(folder: Path, what: str) -> None:
    """A one-line ConfigError unless a file can be created in `folder` (tried, then removed:
    permission bits say nothing about a read-only mount, nor about root)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".inkfuse-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"{what}: cannot write in {folder} ({e.strerror or e}); choose "
                          "another path or fix the folder's permissions") from None


def existing_run(path: str | Path, what: str = "run dir") -> str | Path:
    """`path`, unless it is a file where a run dir (a folder) is expected."""
    if Path(path).is_file():
        raise ConfigError(f"{path} is a file, not a {what}: give the folder that "
                          f"`inkfuse train` wrote (with config.json and checkpoint/)")
    return path


def add_trust_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """`--trust-weights`: load `what` even when it is not a file known by its sha256.
    TorchScript and pickled weights can run code of whoever made them, so the library refuses
    them unless told (its `trust=True`)."""
    parser.add_argument("--trust-weights", action="store_true",
                        help=f"load {what} that is not a known file (it can run code: only "
                             "for files you trust)")


# --- the train grammar ----------------------------------------------------------------------


def add_train_args(parser: argparse.ArgumentParser, what: str = "recipe",
                   default: str | None = None) -> None:
    """`RECIPE --set a.b=c --max-minutes M --out DIR --quiet`, the same for every kind of run.

    With `default` the recipe may be left out (`inkfuse clip train`)."""
    parser.add_argument("recipe", nargs="?" if default else None, default=default,
                        help=f"{what} file or built-in name"
                             + (f" (default {default})" if default else ""))
    parser.add_argument("--out", default=None, help="run dir (default runs/<recipe name>)")
    add_set_args(parser)


def add_set_args(parser: argparse.ArgumentParser) -> None:
    """`--set KEY=VALUE` (repeatable), `--max-minutes M` and `--quiet`: what `overrides` reads."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set train.steps=200")
    parser.add_argument("--max-minutes", action=number(float, lo=0), default=None,
                        help="stop cleanly after this long (0 = no limit); rerun to resume")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(resumable=True)  # Ctrl-C keeps the last checkpoint (see app.main)


def overrides(args: argparse.Namespace, sets: list[str] | None = None) -> list[str]:
    """The recipe overrides the flags ask for: each `--set` (or `sets`, a command's reading of
    them), then `--max-minutes` as `train.max_minutes`, last so that the dedicated flag wins."""
    extra = [] if args.max_minutes is None else [f"train.max_minutes={args.max_minutes}"]
    return [*(args.set if sets is None else sets), *extra]


def only_sections(sets: list[str], sections: tuple[str, ...], command: str) -> list[str]:
    """`sets` (`--set` values), each checked to name a key of `sections`: a command whose recipe
    is a run dir's own may change only its own part of it."""
    for text in sets:
        section = text.split("=", 1)[0].strip().split(".")[0]
        if section not in sections:
            keys = " or ".join(f"{s}.KEY=VALUE" for s in sections)
            raise ConfigError(f"--set {text}: {command} takes only {keys} (the rest of the "
                              "recipe is the run's own)")
    return sets


def run_dir(args: argparse.Namespace) -> Path:
    """`--out`, or runs/<recipe name>: a recipe trains into the same place every time, which is
    what makes rerunning the command resume it."""
    from inkfuse.config import resolve_recipe

    out = Path(args.out) if args.out else Path("runs") / resolve_recipe(args.recipe).stem
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a run dir: give a folder (a new one, or "
                          "the run to resume)")
    return out


# --- conditions and prompts -----------------------------------------------------------------


def add_condition_args(parser: argparse.ArgumentParser, *, context: bool, many: bool) -> None:
    """--class, --prompt and (with `context`) --context, one of them at a time; with `many`,
    --prompt repeats (a grid row each) and --prompts-file reads more. `condition` reads them."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--class", dest="class_id", action=number(int, lo=0, most=SEED_MAX),
                       default=None,
                       help="class id to draw or steer towards")
    if context:
        group.add_argument("--context", action=number(float, lo=-1e6, hi=1e6, many=True),
                           default=None,
                           help="context vector, e.g. 1,0,0,0.5,0")
    group.add_argument("--prompt", action="append" if many else "store", default=None,
                       help="text prompt (text-conditioned models); mix prompts with "
                            "'a red circle :0.7 | a blue square :0.3'"
                            + ("; repeat for one row each" if many else ""))
    if many:
        parser.add_argument("--prompts-file", default=None,
                            help="one prompt per line; blank lines and # comments are skipped")


def read_prompts(args: argparse.Namespace) -> list[str] | None:
    """--prompt (once or repeated) and then --prompts-file's lines; None when neither is given."""
    given = args.prompt
    prompts = [given] if isinstance(given, str) else list(given or [])
    file = getattr(args, "prompts_file", None)
    if file:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ConfigError(f"--prompts-file {file} is not UTF-8 text (byte {e.start}): save "
                              "it as UTF-8") from None
        except OSError as e:
            raise ConfigError(f"cannot read --prompts-file {file}: {e.strerror or e}; check the "
                              "path") from None
        prompts += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not prompts:
            raise ConfigError(f"--prompts-file {file} has no prompts (one per line)")
    return prompts or None


def condition(args: argparse.Namespace) -> dict[str, Any]:
    """The `labels` / `context` / `prompts` keywords of `pipelines.sample` and `editing`."""
    import torch

    context = getattr(args, "context", None)
    return {"labels": None if args.class_id is None else torch.tensor([args.class_id]),
            "context": None if context is None else torch.tensor(context),
            "prompts": read_prompts(args)}


# --- image files ----------------------------------------------------------------------------


def read_image(path: str | Path, channels: int) -> torch.Tensor:
    """One image file as float [1, channels, H, W] in [-1, 1] at its own size (16-bit and palette
    files scaled by `load_image`); the editing functions resize it for the model and back."""
    from inkfuse.data.folder import load_image

    return load_image(path, None, channels)[None].float() / 127.5 - 1


def read_mask(path: str | Path, image_size: tuple[int, int]) -> torch.Tensor:
    """A greyscale mask file as float [1, 1, H, W]: 1 where it is over 50 % (fill), else 0.
    It must have the image's size (w, h), so that it covers what the user drew it over."""
    from inkfuse.data.folder import load_image

    mask = load_image(path, None, 1)
    w, h = image_size
    if tuple(mask.shape[1:]) != (h, w):
        raise DataError(f"{Path(path).name} is {mask.shape[2]}x{mask.shape[1]} but the image is "
                        f"{w}x{h}: give a mask of the same size")
    return (mask[None].float() > 127.5).float()


def read_images(sources: Sequence[str | Path], size: int, channels: int) -> torch.Tensor:
    """uint8 [N, channels, size, size] from image files, folders of them and .npz files (as
    `inkfuse sample --out x.npz` writes them), in the order given."""
    import torch

    from inkfuse.data.folder import EXTENSIONS, load_image

    images = []
    for source in map(Path, sources):
        if source.is_dir():
            files = sorted(p for p in source.iterdir()
                           if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))
            if not files:
                raise DataError(f"{source} has no images ({', '.join(EXTENSIONS)})")
            images += [load_image(p, size, channels) for p in files]
        elif source.suffix.lower() == ".npz":
            images += list(_npz_images(source, size, channels))
        else:
            images.append(load_image(source, size, channels))
    return torch.stack(images)


def _npz_images(path: Path, size: int, channels: int) -> torch.Tensor:
    """The uint8 `images` [N, H, W, C] of an .npz, resized, with grey <-> RGB as needed."""
    import numpy as np
    import torch

    from inkfuse.data.transforms import resize

    if not path.is_file():
        raise DataError(f"{path} not found; check the path")
    try:
        with np.load(path) as f:
            array = f["images"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path} is not an .npz with uint8 'images' [N, H, W, C] "
                        f"({str(e).splitlines()[0]})") from None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DataError(f"{path}: 'images' must be uint8 [N, H, W, 1 or 3], got "
                        f"{array.dtype} {list(array.shape)}")
    x = torch.from_numpy(array).permute(0, 3, 1, 2)
    if x.shape[1] != channels:  # as PIL converts: ITU-R 601 luma, or grey copied to RGB
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x.expand(-1, 3, -1, -1) if channels == 3
             else (x.float() * luma).sum(1, keepdim=True).round().to(torch.uint8))
    return resize(x.contiguous(), size)


def write_npz(out: Path, **arrays: np.ndarray) -> None:
    """Arrays to an .npz, atomically: an interrupted command leaves the old file or none."""
    import numpy as np

    from inkfuse.io import atomic_path

    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def write_images(images: torch.Tensor, out: Path) -> None:
    """Images [N, C, H, W] in [-1, 1] at their own pixels: an .npz of uint8 `images`, or a PNG
    of the one image as it is, or of a grid 8 wide."""
    from inkfuse.viz import save_grid, to_uint8

    if out.suffix.lower() == ".npz":
        write_npz(out, images=to_uint8(images))
    else:
        n = len(images)
        save_grid(images, out, nrow=min(n, 8), scale=1, padding=0 if n == 1 else 2)
