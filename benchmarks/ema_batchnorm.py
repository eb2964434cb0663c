"""What re-measuring the EMA generator's BatchNorm statistics changes
(docs/measurements/ema_batchnorm.md).

For a finished run folder (gan_complete.py, wgan_clip.py or dcgan.py) this
  1. builds a sibling run folder whose generator.pkl is the checkpoint's "ema" state_dict, i.e.
     the EMA generator with the BatchNorm running mean/var averaged from the raw generator's (the
     old behaviour), saved with the script's own save_state_dict, so that compare.py can score it
     beside the run's own generator.pkl (the EMA with re-measured statistics,
     recalibrated_batchnorm);
  2. checks that recalibrated_batchnorm(checkpoint["ema"]) reproduces the run's generator.pkl;
  3. measures the per-channel mean and std (RGB in [0, 1]) of 1,000 samples of the raw generator
     (checkpoint "generator"), the averaged-statistics EMA, the recalibrated EMA and of real
     cached images (the same noise, labels and real sample as compare.py's defaults, seed 0);
  4. compares every BatchNorm layer's running mean/var with the mean/var measured on that layer's
     inputs (the model in eval mode, as when sampling; the first layer's inputs do not depend on
     any statistics);
  5. writes a small PNG: 8 samples of each generator from the same noise, one generator a row.

    OMP_NUM_THREADS=1 python benchmarks/ema_batchnorm.py RUN --sibling RUN_avgbn \
        --png out.png --json out.json
"""

import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import machinery  # noqa: E402
import preprocess  # noqa: E402


def build(module, config, data, state):
    generator = module.Generator(
        config, len(data["class_names"]) if config.conditional else 0, data["channels"]
    )
    machinery.load_weights(generator, state, "checkpoint")
    return generator.train(False)


@torch.inference_mode()
def samples01(generator, z, labels):
    """Images in [0, 1] via uint8, exactly as compare.py and a saved PNG see them."""
    out = torch.cat([generator(zz, ll) for zz, ll in zip(z.split(250), labels.split(250))])
    return ((out.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).float() / 255


def channel_stats(images01):
    return {
        "mean": images01.mean((0, 2, 3)).tolist(),
        "std": images01.std((0, 2, 3)).tolist(),
        "pixel_std_per_image": images01.std((2, 3)).mean(0).tolist(),
    }


@torch.inference_mode()
def batchnorm_inputs(generator, z, labels):
    """[(name, per-channel mean, per-channel var)] of each BatchNorm's inputs, the model in eval
    mode."""
    seen = {}
    hooks = [
        m.register_forward_hook(
            lambda m, inp, out, name=name: seen.setdefault(name, []).append(inp[0])
        )
        for name, m in generator.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    generator(z, labels)
    for hook in hooks:
        hook.remove()
    result = {}
    for name, parts in seen.items():
        x = torch.cat(parts).float()
        result[name] = (x.mean((0, 2, 3)), x.var((0, 2, 3)))
    return result


def compare_bn(generator, measured):
    rows = []
    for name, m in generator.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            mean, var = measured[name]
            ratio = m.running_var / var
            rows.append(
                {
                    "layer": name,
                    "channels": m.num_features,
                    "running_var_mean": m.running_var.mean().item(),
                    "measured_var_mean": var.mean().item(),
                    "ratio_median": ratio.median().item(),
                    "ratio_min": ratio.min().item(),
                    "ratio_max": ratio.max().item(),
                    "mean_shift_in_std": ((m.running_mean - mean).abs() / var.sqrt()).mean().item(),
                }
            )
    return rows


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument(
        "--sibling", type=Path, required=True, help="folder to create (averaged-statistics EMA)"
    )
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    saved = json.loads((args.run / "config.json").read_text())
    info = json.loads((args.run / "run_info.json").read_text())
    if not info.get("finished"):
        sys.exit(f"{args.run} is not finished")
    module = importlib.import_module(machinery.METHOD_SCRIPTS[saved["variant"]])
    config = machinery.read_config(module, args.run / "config.json")
    data = saved["data"]
    checkpoint = machinery.load_checkpoint(args.run / "checkpoint.pt")
    raw = build(module, config, data, checkpoint["generator"])
    averaged = build(module, config, data, checkpoint["ema"])
    recalibrated = machinery.load_generator(module, args.run / "generator.pkl", config, data=data)

    # 1. the sibling run folder
    args.sibling.mkdir(parents=True, exist_ok=False)
    for name in ("config.json", "run_info.json", "metrics.csv"):
        shutil.copy2(args.run / name, args.sibling / name)
    machinery.save_state_dict(averaged, args.sibling / "generator.pkl")

    # 2. does recalibrated_batchnorm(checkpoint "ema") reproduce generator.pkl?
    again = machinery.recalibrated_batchnorm(averaged, config, config.seed + info["epochs_done"])
    reproduced = max(
        (a - b).abs().max().item()
        for a, b in zip(again.state_dict().values(), recalibrated.state_dict().values())
        if a.is_floating_point()
    )
    weights_equal = all(
        torch.equal(a, b)
        for (k, a), b in zip(averaged.state_dict().items(), recalibrated.state_dict().values())
        if "running" not in k and "num_batches" not in k
    )

    # 3. sample statistics: compare.py's noise, labels and real sample
    n = args.num_images
    num_classes = len(data["class_names"])
    z = torch.randn(n, config.z_dim, generator=torch.Generator().manual_seed(args.seed))
    labels = (
        torch.arange(n) % num_classes if config.conditional else torch.zeros(n, dtype=torch.long)
    )
    cache = Path(info["cache_path"])
    images, _, _ = preprocess.load_cache(cache)
    images = torch.as_tensor(images)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))
    real_a = images[order[:n]].float() / 255
    real_b = images[order[n : 2 * n]].float() / 255
    stats = {
        "raw generator": channel_stats(samples01(raw, z, labels)),
        "EMA, averaged statistics": channel_stats(samples01(averaged, z, labels)),
        "EMA, recalibrated": channel_stats(samples01(recalibrated, z, labels)),
        "real (compare.py's sample)": channel_stats(real_a),
        "real (a disjoint sample)": channel_stats(real_b),
    }

    # 4. BatchNorm running statistics against the measured ones
    bn = {}
    for name, generator in (
        ("raw generator", raw),
        ("EMA, averaged statistics", averaged),
        ("EMA, recalibrated", recalibrated),
    ):
        bn[name] = compare_bn(generator, batchnorm_inputs(generator, z, labels))

    # 5. the picture: 8 samples each, same z and labels, one generator a row
    from torchvision.utils import save_image

    pick = torch.arange(8) * 13  # spread over classes for a conditional run
    rows = [samples01(g, z[pick], labels[pick]) for g in (raw, averaged, recalibrated)]
    save_image(torch.cat(rows), args.png, nrow=8, padding=2)

    result = {
        "run": str(args.run),
        "sibling": str(args.sibling),
        "script": saved["script"],
        "epochs_done": info["epochs_done"],
        "recalibration_reproduced_max_abs_diff": reproduced,
        "weights_identical_but_bn_stats": weights_equal,
        "num_images": n,
        "seed": args.seed,
        "sample_stats": stats,
        "batchnorm": bn,
        "png_rows": ["raw generator", "EMA, averaged statistics", "EMA, recalibrated"],
    }
    args.json.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "batchnorm"}, indent=1)[:3000])
    for name, rows in bn.items():
        for row in rows:
            print(
                f"{name:26s} {row['layer']:8s} run_var {row['running_var_mean']:.4g} measured "
                f"{row['measured_var_mean']:.4g} ratio median {row['ratio_median']:.3f} "
                f"[{row['ratio_min']:.3f}, {row['ratio_max']:.3f}] mean shift "
                f"{row['mean_shift_in_std']:.3f} std"
            )


if __name__ == "__main__":
    main()
