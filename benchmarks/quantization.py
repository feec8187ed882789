"""Quantisation costs on this CPU, side by side in one run (docs/benchmarks/quantization.md):

1. Training step (forward + backward + AdamW step) of QAT and FQT (PTQ / PSQ / BHQ gradients)
   against the float step, interleaved per repeat, for the lesion bundle's 2-D CNN and a small
   3-D CNN.
2. Inference: torch eager float, ONNX Runtime float and ONNX Runtime int8 (static QDQ, per-channel)
   latency at batch 1 and a larger batch, and the model sizes, for the lesion bundle's shipped
   weights (2-D) and the small 3-D CNN.

    python -m benchmarks.quantization --repeats 5 --out docs/benchmarks/quantization.md
"""

from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from medrobust.core.quantization import OnnxClassifier, export_int8, quantize
from medrobust.models.bundle import load_bundle_network

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "lesion_classification"


def small_3d() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.BatchNorm3d(8), torch.nn.ReLU(), torch.nn.MaxPool3d(2),
        torch.nn.Conv3d(8, 16, 3, padding=1), torch.nn.BatchNorm3d(16), torch.nn.ReLU(), torch.nn.MaxPool3d(2),
        torch.nn.Conv3d(16, 32, 3, padding=1), torch.nn.BatchNorm3d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(32, 2))


def lesion(weights: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return load_bundle_network(BUNDLE, config_files=("train",), weights="models/model.pt" if weights else None)


def _time(fn: Callable[[], object], inner: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def training_rows(repeats: int) -> list[dict]:
    cases = [("lesion CNN 2-D", lesion(False), (64, 1, 28, 28), 5), ("small CNN 3-D", small_3d(), (8, 1, 32, 32, 32), 3)]
    variants = [("float", None), ("QAT 8-bit", {"bits": 8, "mode": "qat"})]
    variants += [(f"FQT 8/4-bit {q.upper()}", {"bits": 8, "grad_bits": 4, "grad_quantizer": q}) for q in ("ptq", "psq", "bhq")]
    rows = []
    for name, base, shape, inner in cases:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(*shape, generator=g), torch.randint(0, 2, (shape[0],), generator=g)
        steps = {}
        for vname, kw in variants:
            net = copy.deepcopy(base).train()
            if kw:
                quantize(net, **kw)
            opt = torch.optim.AdamW(net.parameters(), 1e-3)

            def step(net=net, opt=opt) -> None:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
            steps[vname] = step
        times: dict[str, list[float]] = {v: [] for v in steps}
        for _ in range(repeats):  # interleaved: every variant once per repeat, so load drifts hit all alike
            for vname, step in steps.items():
                times[vname].append(_time(step, inner))
        ref = statistics.median(times["float"])
        for vname in steps:
            med = statistics.median(times[vname])
            rows.append({"model": name, "batch": f"{tuple(shape)}", "variant": vname, "ms": 1e3 * med, "ratio": med / ref})
    return rows


def _size(module: torch.nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getbuffer().nbytes


def inference_rows(repeats: int) -> list[dict]:
    cases = [("lesion CNN 2-D (shipped weights)", lesion(True), (1, 28, 28), 64, 20),
             ("small CNN 3-D", small_3d(), (1, 32, 32, 32), 8, 5)]
    rows = []
    for name, net, sample, big, inner in cases:
        net.eval()
        g = torch.Generator().manual_seed(0)
        calib = torch.rand(64, *sample, generator=g)
        with tempfile.TemporaryDirectory() as d:
            paths = export_int8(net, calib, Path(d) / "net")
            f32, i8 = OnnxClassifier(paths["float"]), OnnxClassifier(paths["int8"])
            sizes = {"torch eager float": _size(net), "ONNX Runtime float": f32.size_bytes(),
                     "ONNX Runtime int8": i8.size_bytes()}
            runners = {"torch eager float": lambda x: net(x), "ONNX Runtime float": f32, "ONNX Runtime int8": i8}
            for b in (1, big):
                x = torch.rand(b, *sample, generator=g)
                times: dict[str, list[float]] = {k: [] for k in runners}
                with torch.no_grad():
                    for _ in range(repeats):
                        for k, fn in runners.items():
                            times[k].append(_time(lambda fn=fn: fn(x), inner))
                    err = float((i8(x) - net(x)).abs().max())
                ref = statistics.median(times["torch eager float"])
                for k in runners:
                    med = statistics.median(times[k])
                    rows.append({"model": name, "batch": b, "runtime": k, "ms": 1e3 * med, "ratio": med / ref,
                                 "size_kb": sizes[k] / 1024, "max_abs_logit_error": err if k.endswith("int8") else 0.0})
    return rows


def support_rows() -> list[dict]:
    """Which int8 routes accept Conv2d / Conv3d here: torchao's quantize_ configs, torchao PT2E
    (X86 inductor quantizer, eager), ONNX Runtime static / dynamic quantisation."""
    import importlib.util
    import warnings

    rows = []
    for nd in (2, 3):
        conv = torch.nn.Conv2d if nd == 2 else torch.nn.Conv3d
        net = torch.nn.Sequential(conv(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6**nd, 2)).eval()
        x = torch.rand(2, 1, *([8] * nd))
        ref = net(x)

        def attempt(route: str, fn: Callable[[], torch.Tensor]) -> None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = fn()
                rows.append({"route": route, "dims": f"{nd}-D", "result": f"runs (max abs error {float((out - ref).abs().max()):.4f})"})
            except Exception as e:  # the point is to record what fails and how
                msg = str(e)
                op = msg.split("op='")[1].split("'")[0] if "op='" in msg else msg[:90]
                rows.append({"route": route, "dims": f"{nd}-D", "result": f"fails: {type(e).__name__} ({op})"})

        if importlib.util.find_spec("torchao") is None:
            rows.append({"route": "torchao", "dims": f"{nd}-D", "result": "not installed"})
        else:
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

            for cfg in (Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig):
                def run_ao(cfg=cfg) -> torch.Tensor:
                    m = copy.deepcopy(net)
                    quantize_(m, cfg(), filter_fn=lambda mod, fqn: isinstance(mod, (conv, torch.nn.Linear)))
                    return m(x)
                attempt(f"torchao quantize_({cfg.__name__})", run_ao)

            def run_pt2e() -> torch.Tensor:
                import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

                q = xiq.X86InductorQuantizer()
                q.set_global(xiq.get_default_x86_inductor_quantization_config())
                prepared = prepare_pt2e(torch.export.export(copy.deepcopy(net), (x,)).module(), q)
                prepared(x)
                return convert_pt2e(prepared)(x)
            attempt("torchao PT2E + X86InductorQuantizer (eager: quantize/dequantize reference ops)", run_pt2e)

        def run_ort() -> torch.Tensor:
            with tempfile.TemporaryDirectory() as d:
                return OnnxClassifier(export_int8(net, torch.rand(16, 1, *([8] * nd)), Path(d) / "n")["int8"])(x)
        attempt("ONNX Runtime quantize_static (QDQ, per-channel)", run_ort)
    return rows


def markdown(train: list[dict], infer: list[dict], repeats: int, command: str, support: list[dict]) -> str:
    lines = [
        "# Quantisation cost: FQT training step, int8 inference",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        f"One CPU thread (`torch.set_num_threads(1)`, ONNX Runtime intra-op threads 1) on a shared 2-core "
        f"machine ({torch.__version__}); other jobs were running, so absolute times are noisy: each ratio is "
        f"against the float baseline timed interleaved with it in the same run, median of {repeats} repeats.",
        "",
        "## Training step (forward + backward + AdamW), vs float",
        "",
        "FQT recomputes each conv / linear in backward and back-propagates the output gradient twice "
        "(b-bit input-gradient path, 8-bit weight-gradient path) and quantises it in Python-level torch ops: "
        "on a CPU without low-bit kernels it is a *simulation* of FQT, slower than float, never faster. "
        "The paper's speed-up needs integer hardware kernels that this toolkit does not have.",
        "",
        "| model | input batch | variant | ms / step | x float |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['batch']} | {r['variant']} | {r['ms']:.1f} | {r['ratio']:.2f} |" for r in train]
    lines += [
        "",
        "## Inference: float vs int8 (ONNX Runtime static QDQ, per-channel weights)",
        "",
        "Size: the `torch.save` state dict for torch, the `.onnx` file otherwise. Max |logit error|: int8 vs "
        "torch float on the timed batch (random inputs).",
        "",
        "| model | batch | runtime | ms / batch | x torch float | size (KB) | max abs logit error |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['batch']} | {r['runtime']} | {r['ms']:.3f} | {r['ratio']:.2f} | {r['size_kb']:.1f} | "
              f"{r['max_abs_logit_error']:.4f} |" for r in infer]
    lines += ["", "## Which int8 route handles convolutions (torch " + torch.__version__ + ")", "",
              "| route | conv | result |", "|---|---|---|"]
    lines += [f"| {r['route']} | {r['dims']} | {r['result']} |" for r in support]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="write the markdown here (default: print)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m benchmarks.quantization " + " ".join(sys.argv[1:] if argv is None else argv)
    text = markdown(training_rows(args.repeats), inference_rows(args.repeats), args.repeats, command.strip(),
                    support_rows())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
