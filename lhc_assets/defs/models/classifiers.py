"""Stage 3b: the Keras classifiers of the study, one asset per entry of ``lhc_assets.ml.contract.KERAS_MODELS``.

Each is made from its registry entry: it reads its registered training and test sets as references (Petastorm
reads the files), trains with ``lhc_assets.ml.training.train_classifier`` and is published by the model IO
manager as a versioned ``.keras``. Models reading the particle lists take ``SequenceTrainingConfig``.
"""


from typing import Literal

from dagster import AssetExecutionContext, AssetIn, AssetsDefinition, Config, MetadataValue, asset
from pydantic import Field

from lhc_assets.defs.metadata import png_markdown
from lhc_assets.defs.models.search import OWNERS
from lhc_assets.ml.contract import KERAS_MODELS, KerasModelSpec, keras_model, normalize_sequence_steps
from lhc_assets.physics.schema import LABEL_NAMES, LLF_ROWS
from lhc_assets.spark.metering import StageMeter
from resources.model_io_manager import TrainedModel, model_scratch
from resources.references import TableRef
from resources.storage import StorageResource


class TrainingConfig(Config):
    batch_size: int = Field(default=128, gt=0, description="Training batch size.")
    learning_rate: float = Field(default=1e-3, gt=0.0, description="Adam learning rate.")
    seed: int = Field(default=42, description="Seed of the weights, the dropout and the row-group order.")
    distribution: Literal["none", "multi_worker"] = Field(
        default="none", description="'multi_worker': tf.distribute.MultiWorkerMirroredStrategy over `workers` "
        "local processes, each reading its shard of the training set.")
    workers: int = Field(default=2, ge=2, description="Worker processes for distribution='multi_worker'.")
    reader_workers: int = Field(default=1, ge=1, description=(
        "Petastorm reader threads. One keeps the row-group order, and so the training, reproducible; more read "
        "faster but in a nondeterministic order."))

    def particle_rows(self) -> tuple[int | None, int]:
        """(sequence_steps, bucket_width) of models reading the particle lists: whole lists, unbucketed."""
        return None, 0


class HlfTrainingConfig(TrainingConfig):
    epochs: int = Field(default=5, gt=0, description="Training epochs (DESIGN: 5).")
    hidden: list[int] = Field(default=[50, 20, 10], description="Hidden layer sizes (DESIGN: 50, 20, 10).")

    def builder_kwargs(self) -> dict:
        return {"hidden": tuple(self.hidden)}


class SequenceTrainingConfig(TrainingConfig):
    epochs: int = Field(default=6, gt=0, description="Training epochs (DESIGN: 6 for the inclusive classifier).")
    sequence_steps: int | None = Field(default=None, ge=1, le=LLF_ROWS, description=(
        "Rows of each particle list the GRU reads: unset (or 801) reads whole lists (DESIGN.md; bucketed by "
        "length, see bucket_width); fewer reads only the particles nearest the lepton (the end of the list), a "
        "different input: 128 trains the inclusive classifier 3.7x faster at the same test AUC on the generated "
        "data, but costs the particle-sequence classifier accuracy (docs/performance.md)."))
    bucket_width: int = Field(
        default=100, ge=0, description="With whole lists: group events by particle count into buckets of "
        "this many steps and run the GRU only over each batch's bucket (0: always all 801 steps; same model, slower).")
    jit_compile: bool = Field(default=True, description=(
        "Compile the training step with XLA: 1.3-1.6x faster on CPU; each batch shape compiles once, a few "
        "seconds each."))

    def builder_kwargs(self) -> dict:
        return {"jit_compile": self.jit_compile}

    def particle_rows(self) -> tuple[int | None, int]:
        return self.sequence_steps, self.bucket_width


class ImageTrainingConfig(TrainingConfig):
    epochs: int = Field(default=6, gt=0, description="Training epochs.")
    eta_bins: int = Field(default=64, ge=4, description="Image pixels along eta (the study: 150).")
    phi_bins: int = Field(default=40, ge=4, description="Image pixels around the phi circle (the study: 94).")
    eta_max: float = Field(default=3.0, gt=0.0, description="Images cover |eta| < eta_max (the study: 5).")
    reflect_eta: bool = Field(default=True, description="Reflect eta so the lepton's eta is positive.")
    filters: list[int] = Field(default=[8, 16, 32], description="Convolution filters per block (3x3, then 2x2 pool).")
    dense_units: int = Field(default=32, gt=0, description="Units of the dense layer after the convolutions.")
    bucket_width: int = Field(default=100, ge=0, description=(
        "Group events by particle count into buckets of this many rows and draw each batch from its bucket's "
        "rows only (0: all 801 rows; the same images, slower)."))

    def builder_kwargs(self) -> dict:
        return {"eta_bins": self.eta_bins, "phi_bins": self.phi_bins, "eta_max": self.eta_max,
                "reflect_eta": self.reflect_eta, "filters": tuple(self.filters), "dense_units": self.dense_units}

    def particle_rows(self) -> tuple[int | None, int]:
        return None, self.bucket_width


# Models whose training config is not chosen by what they read.
_CONFIGS = {"image_classifier": ImageTrainingConfig}


def _train(context: AssetExecutionContext, name: str, config: TrainingConfig, storage: StorageResource,
           train: TableRef, test: TableRef, feature_scalers: dict | None = None) -> TrainedModel:
    """Train the registered model ``name`` with the asset's config; the model and its materialization metadata."""
    from lhc_assets.ml.evaluation import plot_training_curves
    from lhc_assets.ml.training import TrainingSettings, train_classifier

    meter = StageMeter(config.workers if config.distribution == "multi_worker" else None)
    spec = keras_model(name)
    steps, bucket_width = config.particle_rows()
    scalers = {"scalers": feature_scalers} if spec.needs_scalers else {}
    settings = TrainingSettings(
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed,
        reader_workers=config.reader_workers, workers=config.workers if config.distribution == "multi_worker" else 1,
        sequence_steps=steps, bucket_width=bucket_width, builder_kwargs={**config.builder_kwargs(), **scalers})
    with model_scratch(storage, name) as scratch:
        trained = train_classifier(spec, train.path, test.path, settings, scratch)
    final = {k: round(float(v[-1]), 4) for k, v in trained.history.items() if v}
    context.log.info(f"{name}: {config.epochs} epochs on {trained.train_events} events in {trained.seconds:.0f} s, "
                     f"final {final}")
    particles = ({"sequence_steps": normalize_sequence_steps(settings.sequence_steps) or LLF_ROWS,
                  "bucket_width": settings.bucket_width} if spec.reads_particles else {})
    pictures = (_event_images(config, test, feature_scalers) if isinstance(config, ImageTrainingConfig)
                and feature_scalers is not None else {})
    return TrainedModel(trained.model, trained.history, metadata={
        "parameters": trained.model.count_params(),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "train_events": trained.train_events,
        "training_seconds": round(trained.seconds, 1),
        "samples_per_s": round(trained.samples_per_s, 1),
        **{f"final_{k}": v for k, v in final.items()},
        "training_curves": png_markdown(plot_training_curves(trained.history, name), f"{name} training curves"),
        "distribution": config.distribution,
        **particles,
        **pictures,
        **meter.metadata(trained.train_events * config.epochs),  # its events: the samples trained on
        **{k: MetadataValue.json(v) if isinstance(v, dict) else v for k, v in trained.details.items()},
    })


def _event_images(config: ImageTrainingConfig, test: TableRef, feature_scalers: dict) -> dict:
    """What the network sees: the average image of each class on the test set, and one event of each."""
    from lhc_assets.ml.images import ImageGrid, class_images, plot_class_images

    grid = ImageGrid(config.eta_bins, config.phi_bins, config.eta_max, config.reflect_eta)
    images, labels = class_images(str(test.path), feature_scalers, grid)
    png = plot_class_images(images, labels, list(LABEL_NAMES), grid)
    return {"image_shape": MetadataValue.json(list(grid.shape)),
            "event_images": png_markdown(png, "average image per class and single events")}


def classifier_asset(spec: KerasModelSpec) -> AssetsDefinition:
    """The asset of a registered Keras classifier: its datasets as references in, a versioned .keras out."""
    config_class = _CONFIGS.get(spec.name, SequenceTrainingConfig if spec.reads_particles else HlfTrainingConfig)
    ins = {"train": AssetIn(spec.train_set, dagster_type=TableRef),
           "test": AssetIn(spec.test_set, dagster_type=TableRef)}
    if spec.needs_scalers:
        ins["feature_scalers"] = AssetIn("feature_scalers")

    @asset(
        name=spec.name, group_name="models", kinds={"tensorflow", "keras"}, owners=OWNERS, tags={"stage": "models"},
        io_manager_key="model_io_manager",
        ins=ins,
        description=(f"{spec.description}, trained from the Petastorm reader of {spec.train_set} with "
                     f"{spec.test_set} as validation; native .keras file and training history."),
    )
    def classifier(context: AssetExecutionContext, config: config_class, storage: StorageResource, train: TableRef,
                   test: TableRef, **scalers: dict) -> TrainedModel:
        return _train(context, spec.name, config, storage, train, test, scalers.get("feature_scalers"))

    return classifier


keras_classifiers = [classifier_asset(spec) for spec in KERAS_MODELS.values()]
