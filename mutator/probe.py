"""Build a model from source and look at its channels (runs inside a sandbox worker only).

`trial(source, spec)` executes the source, builds the network (on the meta device by default: shapes
without memory or compute), records every layer's channel attributes, and runs one forward pass at
the declared input shape. During that pass a hook checks each layer's input against what the layer
expects (`Conv.in_channels`, `BatchNorm.num_features`, `Linear.in_features`, ...); a mismatch is
recorded and the pass goes on with a tensor of the expected shape, so one pass finds every
mismatch of a candidate (the width analysis repairs them all at once).

Model calling conventions (`spec["class_name"]` names a class or a factory function):
- LEMUR: `Net(in_shape, out_shape, prm, device)`, `in_shape=(batch, channels, h, w)`,
  `out_shape=(classes,)`, `prm` filled from `supported_hyperparameters()`.
- plain: called with `num_classes=` (and `in_channels=`-like arguments) when it takes them, else
  with no arguments.
"""
from __future__ import annotations

import inspect
import itertools
import sys
import types

import torch
import torch.nn as nn

CHANNEL_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features",
                 "num_features", "num_channels", "normalized_shape", "num_parameters")
GEOMETRY_ATTRS = ("kernel_size", "stride", "padding", "dilation", "output_padding", "num_groups",
                  "output_size", "upscale_factor", "downscale_factor", "scale_factor")
PRM_DEFAULTS = {"lr": 0.01, "momentum": 0.9, "dropout": 0.2, "weight_decay": 5e-4, "norm_eps": 1e-5,
                "norm_momentum": 0.1}
IN_CHANNEL_KWARGS = ("in_channels", "in_chans", "input_channels", "num_channels", "in_ch")
CLASS_KWARGS = ("num_classes", "n_classes", "classes", "num_class")

_counter = itertools.count()


class ModelError(Exception):
    """The source does not give a model at this spec; the message says why, in one line."""


class PrmDict(dict):
    """LEMUR `prm`: the supported hyperparameters, and a neutral 0.5 for anything else asked."""

    def __missing__(self, key):
        return PRM_DEFAULTS.get(key, 0.5)


def load(source: str) -> types.ModuleType:
    name = f"nasforge_candidate_{next(_counter)}"
    code = compile(source, f"<candidate:{name}>", "exec")
    mod = types.ModuleType(name)
    mod.__file__ = f"<candidate:{name}>"
    sys.modules[name] = mod  # dataclasses and pickling look the module up
    try:
        exec(code, mod.__dict__)
    finally:
        sys.modules.pop(name, None)
    return mod


def module_candidates(mod: types.ModuleType) -> list[str]:
    """Names that could build a network: nn.Module subclasses and functions defined in the file."""
    out = []
    for name, obj in vars(mod).items():
        if getattr(obj, "__module__", None) != mod.__name__ or name.startswith("_"):
            continue
        if (isinstance(obj, type) and issubclass(obj, nn.Module)) or inspect.isfunction(obj):
            out.append(name)
    return out


LEMUR_PARAMS = {"in_shape", "out_shape", "prm", "device"}


def buildable(obj) -> bool:
    """Whether `build` can call `obj` with nothing but what it supplies: every parameter without a
    default is a number of classes or input channels (`CLASS_KWARGS`, `IN_CHANNEL_KWARGS`), or the
    whole LEMUR signature. `CifarResNet(block, layers)` is not; `cifar10_resnet20()` is."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
    if {"in_shape", "out_shape"} <= set(params) and required <= LEMUR_PARAMS:
        return True
    return required <= set(CLASS_KWARGS + IN_CHANNEL_KWARGS)


def buildable_candidates(mod: types.ModuleType) -> list[str]:
    """The `module_candidates` that `build` can call without arguments of its own (`buildable`),
    less LEMUR's `supported_hyperparameters`: what a `--class-name` hint offers."""
    return [n for n in module_candidates(mod) if n != "supported_hyperparameters" and buildable(getattr(mod, n))]


def pick_class(mod: types.ModuleType, class_name: str | None) -> str:
    if class_name:
        if not callable(getattr(mod, class_name, None)):
            raise ModelError(f"no class or function named {class_name!r} in the file")
        return class_name
    if isinstance(getattr(mod, "Net", None), type):
        return "Net"
    classes = [n for n in module_candidates(mod) if isinstance(getattr(mod, n), type)]
    if not classes:
        raise ModelError("no nn.Module class in the file")
    if len(classes) == 1:
        return classes[0]
    options = buildable_candidates(mod)
    if not options:
        raise ModelError(f"no class named Net, and no class or function in the file builds a network without "
                         f"arguments ({', '.join(classes)} need some): add a factory function and pass it with --class-name")
    raise ModelError(f"no class named Net; pick one with --class-name ({', '.join(options)})")


def build(mod: types.ModuleType, spec: dict, device: str = "meta") -> nn.Module:
    in_shape = tuple(spec["in_shape"])
    classes = int(spec["classes"])
    name = pick_class(mod, spec.get("class_name"))
    factory = getattr(mod, name)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    dev = torch.device(device)
    with torch.device(dev):
        if {"in_shape", "out_shape"} <= set(params):
            prm = PrmDict()
            hp = getattr(mod, "supported_hyperparameters", None)
            for key in (hp() if callable(hp) else ()):
                prm[key] = PRM_DEFAULTS.get(key, 0.5)
            kwargs = {"in_shape": in_shape, "out_shape": (classes,), "prm": prm}
            if "device" in params:
                kwargs["device"] = dev
            model = factory(**kwargs)
        else:
            kwargs = {}
            for k in CLASS_KWARGS:
                if k in params:
                    kwargs[k] = classes
                    break
            else:  # factories like torchvision's resnet50(**kwargs) pass num_classes on
                if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                    kwargs["num_classes"] = classes
            for k in IN_CHANNEL_KWARGS:
                if k in params:
                    kwargs[k] = in_shape[1]
                    break
            try:
                model = factory(**kwargs)
            except TypeError as exc:
                if "num_classes" not in kwargs or "num_classes" not in str(exc):
                    raise
                kwargs.pop("num_classes")
                model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{name}(...) returned {type(model).__name__}, not an nn.Module")
    return model


def _attr(v):
    if isinstance(v, torch.Size):
        v = tuple(v)
    if isinstance(v, (list, tuple)):
        return [_attr(x) for x in v]
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, (int, float, str)):
        return v
    return None


def channel_table(model: nn.Module) -> dict[str, dict]:
    """Per named module: its type and channel/geometry attributes, and its own parameter shapes."""
    table = {}
    for name, m in model.named_modules():
        row = {"type": type(m).__name__}
        for a in CHANNEL_ATTRS + GEOMETRY_ATTRS:
            if hasattr(m, a):
                v = _attr(getattr(m, a))
                if v is not None:
                    row[a] = v
        own = [list(p.shape) for p in m.parameters(recurse=False)]
        if own and len(row) == 1:  # a custom module with its own weights (layer scale, ...)
            row["param_shapes"] = own
        table[name or "<root>"] = row
    return table


def is_depthwise(row: dict) -> bool:
    g = row.get("groups", 1)
    return g > 1 and g == row.get("in_channels") and row.get("out_channels", 0) % g == 0


def producer_attrs(row: dict) -> tuple[str, ...]:
    """Attributes that set a width (a layer's own output channels)."""
    if "out_channels" in row and not is_depthwise(row):
        return ("out_channels",)
    if "out_features" in row:
        return ("out_features",)
    return ()


class _Recorder:
    """Forward hooks: record input/attribute channel mismatches and carry on with fixed shapes."""

    def __init__(self, model: nn.Module):
        self.names = {id(m): n or "<root>" for n, m in model.named_modules()}
        self.mismatches: list[list] = []
        self._seen: set = set()
        self._fix_out: dict[int, int] = {}

    def _note(self, name, attr, expected, actual):
        key = (name, attr)
        if key not in self._seen:
            self._seen.add(key)
            self.mismatches.append([name, attr, expected, actual])

    def pre(self, module, args):
        if not args or not isinstance(args[0], torch.Tensor) or id(module) not in self.names:
            return None
        x = args[0]
        name = self.names[id(module)]
        if isinstance(module, nn.modules.conv._ConvNd):
            batched = x.dim() == len(module.kernel_size) + 2
            dim = 1 if batched else 0
            if x.dim() <= dim or x.shape[dim] == module.in_channels:
                return None
            actual = x.shape[dim]
            self._note(name, "in_channels", module.in_channels, actual)
            if module.groups > 1 and module.groups == module.in_channels:
                self._note(name, "groups", module.groups, actual)
                mult = module.out_channels // module.in_channels
                self._note(name, "out_channels", module.out_channels, actual * mult)
                self._fix_out[id(module)] = actual * mult
            return self._reshaped(x, dim, module.in_channels, args)
        if isinstance(module, nn.Linear):
            if x.dim() == 0 or x.shape[-1] == module.in_features:
                return None
            self._note(name, "in_features", module.in_features, x.shape[-1])
            return self._reshaped(x, x.dim() - 1, module.in_features, args)
        for cls, attr in ((nn.modules.batchnorm._NormBase, "num_features"),
                          (nn.GroupNorm, "num_channels"), (nn.PReLU, "num_parameters")):
            if isinstance(module, cls):
                want = getattr(module, attr)
                if x.dim() < 2 or x.shape[1] == want or (attr == "num_parameters" and want == 1):
                    return None
                self._note(name, attr, want, x.shape[1])
                self._fix_out[id(module)] = x.shape[1]
                return self._reshaped(x, 1, want, args)
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
            want = module.normalized_shape[0]
            if x.dim() == 0 or x.shape[-1] == want:
                return None
            self._note(name, "normalized_shape", [want], [x.shape[-1]])
            self._fix_out[id(module)] = -x.shape[-1]  # negative: last dimension
            return self._reshaped(x, x.dim() - 1, want, args)
        return None

    @staticmethod
    def _reshaped(x, dim, size, args):
        shape = list(x.shape)
        shape[dim] = size
        return (torch.zeros(shape, dtype=x.dtype, device=x.device), *args[1:])

    def post(self, module, args, out):
        size = self._fix_out.pop(id(module), None)
        if size is None or not isinstance(out, torch.Tensor):
            return None
        shape = list(out.shape)
        if size < 0:
            shape[-1] = -size
        else:
            shape[1 if out.dim() > 1 else 0] = size
        return torch.zeros(shape, dtype=out.dtype, device=out.device)


def first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out:
        return first_tensor(out[0])
    if isinstance(out, dict) and out:
        return first_tensor(next(iter(out.values())))
    logits = getattr(out, "logits", None)
    return logits if isinstance(logits, torch.Tensor) else None


def forward(model: nn.Module, spec: dict, device: str = "meta", record: bool = True):
    """One forward pass at spec["in_shape"]: (output shape, mismatches found on the way)."""
    model.eval()
    x = torch.zeros(tuple(spec["in_shape"]), device=device)
    rec = _Recorder(model)
    handles = []
    if record:
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(rec.pre))
            handles.append(m.register_forward_hook(rec.post))
    try:
        with torch.no_grad():
            out = first_tensor(model(x))
    except BaseException as exc:
        exc.nasforge_mismatches = rec.mismatches  # what the hooks saw before it failed
        raise
    finally:
        for h in handles:
            h.remove()
    if out is None:
        raise ModelError("forward returned no tensor")
    return list(out.shape), rec.mismatches


def trial(source: str, spec: dict, device: str = "meta", keep_mismatches: bool = False) -> dict:
    """Execute, build and forward one source. Never raises for problems in the model code.

    Returns {"stage": "ok"|"load"|"build"|"forward", "error", "table", "out_shape",
    "mismatches", "params"}. `stage` names how far it got without an exception; "ok" still may
    carry mismatches (the hooks patched them over) or a wrong output shape. With keep_mismatches,
    a forward pass that fails also reports the mismatches recorded before it failed (the repair
    solves them first: a residual add after a mismatched BatchNorm fails only because of it).
    """
    from mutator.worker import short_error

    res = {"stage": "load", "error": None, "table": None, "out_shape": None, "mismatches": [],
           "params": None}
    try:
        mod = load(source)
        res["stage"] = "build"
        model = build(mod, spec, device)
        res["table"] = channel_table(model)
        res["params"] = sum(p.numel() for p in model.parameters())
        res["stage"] = "forward"
        res["out_shape"], res["mismatches"] = forward(model, spec, device)
        res["stage"] = "ok"
    except ModelError as exc:
        res["error"] = str(exc)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # model code: anything goes
        res["error"] = short_error(exc)
        if keep_mismatches and res["stage"] == "forward":
            res["mismatches"] = list(getattr(exc, "nasforge_mismatches", None) or [])
    return res
