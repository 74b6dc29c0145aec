"""``bench train``: train a classifier, PixelCNN or GAN into the model store, or tune the deep image prior."""
from __future__ import annotations

from pathlib import Path

import click

from benchmark.cli.common import common_model_options, setup


@click.command()
@click.argument("what", default="classifier")
@click.option("--dataset", default="mnist5k", show_default=True)
@click.option("--model", default="resnet", show_default=True, help="Classifier architecture.")
@click.option("--defense", "defense_name", default="none", show_default=True,
              help="Training-time defense (adv-fgsm, adv-bim, label-smoothing) or none.")
@click.option("--size", default="small", show_default=True,
              help="PixelCNN preset: tiny, small, medium or large; GAN: tiny or small.")
@click.option("--latent", type=click.IntRange(min=1), default=None, help="GAN latent size (default 128).")
@click.option("--figures", type=click.Path(file_okay=False, path_type=Path), default=Path("results/figures"),
              show_default=True, help="Where the PixelCNN's or GAN's sample grid is written.")
@common_model_options
def train(what, dataset, model, defense_name, size, latent, figures, data_root, download, device, seed, quiet, threads) -> None:
    """Train a model into the store (or report the cached one). WHAT: classifier (default), pixelcnn, gan, or dip
    (tunes the deep image prior's iteration count on validation data)."""
    setup(quiet, threads)
    from benchmark.core.device import resolve_device
    from benchmark.core.errors import BenchError
    from benchmark.data.dataset import load_dataset
    from benchmark.store.model_store import ModelStore

    if what not in ("classifier", "pixelcnn", "gan", "dip"):
        raise BenchError(f"cannot train {what!r}: trainable here: classifier, pixelcnn, gan, "
                         "dip (tunes its iterations)")
    data = load_dataset(dataset, data_root, download)
    if what in ("gan", "dip"):
        from benchmark.training.dip import train_dip_command
        from benchmark.training.gan import train_gan_command

        lines = (train_gan_command(data, resolve_device(device), seed, size, latent, figures) if what == "gan"
                 else train_dip_command(data, resolve_device(device), seed))
        click.echo("\n".join(lines))
        return
    if what == "pixelcnn":
        from benchmark.training.pixelcnn import get_pixelcnn, sample_figure, sample_figure_name

        pixelcnn, meta = get_pixelcnn(data, resolve_device(device), ModelStore(), seed=seed, size=size)
        m = meta["metrics"]
        click.echo(f"pixelcnn ({size}) on {dataset} (seed {seed}): test {m['test_bpd']:.3f} bits/dim, "
                   f"val {m['val_bpd']:.3f}; trained in {m['train_seconds']:.0f} s at "
                   f"{m['train_images_per_second']} images/s on {m['device']}  [{meta['key']}]")
        path = sample_figure(pixelcnn, data, figures / sample_figure_name(dataset, size), seed=seed)
        click.echo(f"wrote {path}")
        return
    _train_classifier(data, model, defense_name, device, seed)


def _train_classifier(data, model: str, defense_name: str, device: str, seed: int) -> None:
    from benchmark.core.defense import build_defense
    from benchmark.core.device import resolve_device
    from benchmark.core.errors import BenchError
    from benchmark.store.model_store import ModelStore
    from benchmark.training.zoo import get_classifier

    defense = build_defense(defense_name)
    if defense_name != "none" and not defense.trains_classifier:
        from benchmark.core.registry import DEFENSES

        trainable = [e.name for e in DEFENSES.entries() if getattr(e.factory, "trains_classifier", False)]
        raise BenchError(f"defense {defense_name!r} has no training-time part (it acts at inference, in `bench run`); "
                         f"training-time defenses: {', '.join(trainable)}, or none")
    _, meta = get_classifier(data, model, defense, seed, resolve_device(device), ModelStore())
    m = meta["metrics"]
    click.echo(f"{model} on {data.name} ({defense_name}, seed {seed}): test accuracy {100 * m['test_accuracy']:.2f}%, "
               f"val {100 * m['val_accuracy']:.2f}%  [{meta['key']}]")
