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
from lhc_assets.physics.schema import LLF_ROWS
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


def _train(context: AssetExecutionContext, name: str, config: HlfTrainingConfig | SequenceTrainingConfig,
           storage: StorageResource, train: TableRef, test: TableRef) -> TrainedModel:
    """Train the registered model ``name`` with the asset's config; the model and its materialization metadata."""
    from lhc_assets.ml.evaluation import plot_training_curves
    from lhc_assets.ml.training import TrainingSettings, train_classifier

    spec = keras_model(name)
    sequence = config if isinstance(config, SequenceTrainingConfig) else None
    settings = TrainingSettings(
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed,
        reader_workers=config.reader_workers, workers=config.workers if config.distribution == "multi_worker" else 1,
        sequence_steps=sequence.sequence_steps if sequence else None,
        bucket_width=sequence.bucket_width if sequence else 0, builder_kwargs=config.builder_kwargs())
    with model_scratch(storage, name) as scratch:
        trained = train_classifier(spec, train.path, test.path, settings, scratch)
    final = {k: round(float(v[-1]), 4) for k, v in trained.history.items() if v}
    context.log.info(f"{name}: {config.epochs} epochs on {trained.train_events} events in {trained.seconds:.0f} s, "
                     f"final {final}")
    particles = ({"sequence_steps": normalize_sequence_steps(settings.sequence_steps) or LLF_ROWS,
                  "bucket_width": settings.bucket_width} if spec.reads_particles else {})
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
        **{k: MetadataValue.json(v) if isinstance(v, dict) else v for k, v in trained.details.items()},
    })


def classifier_asset(spec: KerasModelSpec) -> AssetsDefinition:
    """The asset of a registered Keras classifier: its datasets as references in, a versioned .keras out."""
    config_class = SequenceTrainingConfig if spec.reads_particles else HlfTrainingConfig

    @asset(
        name=spec.name, group_name="models", kinds={"tensorflow", "keras"}, owners=OWNERS, tags={"stage": "models"},
        io_manager_key="model_io_manager",
        ins={"train": AssetIn(spec.train_set, dagster_type=TableRef),
             "test": AssetIn(spec.test_set, dagster_type=TableRef)},
        description=(f"{spec.description}, trained from the Petastorm reader of {spec.train_set} with "
                     f"{spec.test_set} as validation; native .keras file and training history."),
    )
    def classifier(context: AssetExecutionContext, config: config_class, storage: StorageResource, train: TableRef,
                   test: TableRef) -> TrainedModel:
        return _train(context, spec.name, config, storage, train, test)

    return classifier


keras_classifiers = [classifier_asset(spec) for spec in KERAS_MODELS.values()]
