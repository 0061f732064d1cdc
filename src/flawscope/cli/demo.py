"""``flawscope demo``: the whole job on generated parts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from flawscope.cli.common import console, progress_bars
from flawscope.cli.render import metrics_table, operating_table, print_calibration
from flawscope.errors import InputError

MARKER = ".flawscope-demo"
# The textures of flawscope.data.textures (a test checks the two lists agree; importing that
# module here would load OpenCV for every command).
Texture = Literal["brushed_metal", "fabric", "printed", "wood"]


def demo_command(
    out: Annotated[
        Path,
        typer.Option(
            metavar="DIR",
            help="Working folder for the dataset, bundles and report "
            "(replaced when an earlier demo made it).",
        ),
    ] = Path("demo-out"),
    texture: Annotated[Texture, typer.Option(help="Synthetic part texture.")] = "brushed_metal",
    model: Annotated[str, typer.Option(metavar="NAME", help="Registered model name.")] = "padim",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic dataset.")] = 0,
) -> None:
    """The whole job on generated parts: dataset, train, calibrate, evaluate, report, export, inspect."""
    import shutil
    from collections import Counter

    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.evaluate.run import evaluate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train
    from flawscope.runtime import Inspector

    # Only a folder an earlier demo made is replaced; anything else there is the user's.
    if out.exists() and not _made_by_demo(out) and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists and was not made by 'flawscope demo'; give another --out folder")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by 'flawscope demo'; the next demo run replaces this folder\n")
    spec = SyntheticSpec(
        texture=texture, size=(256, 256), n_train=200, n_test_good=60, n_test_defect_per_type=12, seed=seed
    )
    console.rule("1. synthetic dataset")
    dataset = write_dataset(out / f"synthetic-{texture}", spec)
    console.print(
        f"{dataset.root}: {len(dataset.train)} good for training, {len(dataset.test_good)} good + "
        f"{len(dataset.test_defect)} defective for testing ({', '.join(dataset.defect_types)})"
    )
    console.rule("2. train (good parts only), 30% of them held out for calibration")
    bundle = out / "bundle"
    with progress_bars() as progress:
        result = train(dataset, bundle, model=model, holdout=0.3, progress=progress)
        console.print(f"fitted {model} on {result.n_train} images in {result.fit_seconds:.1f} s")
        console.rule("3. calibrate for a 1% false-reject target")
        calibration = calibrate_bundle(
            bundle,
            result.holdout_images,
            target_frr=0.01,
            review_rate=0.05,
            names=result.holdout_paths,
            progress=progress,
        )
    print_calibration(calibration)
    console.rule("4. evaluate on the test split, with the HTML report")
    report = out / "report.html"
    with progress_bars() as progress:
        run = evaluate_bundle(bundle, dataset.root, report=report, progress=progress)
    console.print(metrics_table(run, "Validation on the synthetic test split"))
    if run.operating_point is not None:
        console.print(operating_table(run.operating_point))
    console.rule("5. export to ONNX and inspect with the torch-free runtime")
    deployed = export_bundle(bundle, out / "bundle-onnx")
    inspector = Inspector.load(deployed.path)
    images = _read_test(dataset)
    verdicts = inspector.inspect_many(images)
    counts = Counter(v.outcome.value for v in verdicts)
    console.print(f"runtime verdicts on {len(verdicts)} test parts: {dict(counts)}")
    console.print(f"bundle: {bundle}\ndeployable bundle: {deployed.path}\nreport: {report}")


def _made_by_demo(out: Path) -> bool:
    # The marker, or the layout of a demo folder made before there was a marker.
    legacy = (out / "bundle" / "manifest.json").is_file() and any(out.glob("synthetic-*"))
    return (out / MARKER).is_file() or legacy


def _read_test(dataset: Any) -> list[Any]:
    from flawscope.data.datasets import read_samples

    return read_samples(dataset.test, masks=False).images
