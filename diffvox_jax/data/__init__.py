"""Datasets: tfds builders for local multitrack folders, the grain input pipeline and synthetic songs.

Modules, in the order data flows through them:
- `layouts`: finds the tracks of a local folder (MUSDB18-HQ, MUSDB18, MoisesDB, MIR-1K, any stems folder,
  synthetic songs), with the splits, and a `LayoutError` naming the expected layout when a folder does not fit.
- `synthetic`, `synthetic_voice`: the embedded default dataset (Bach chorales sung by Festival over FluidSynth).
- `records`: the stored form: int16 blocks of one stream per record, one scale per track, the track table.
- `builders`: one `tfds.core.GeneratorBasedBuilder` per source writing array_record (no TensorFlow), and
  `prepare` (idempotent); `diffvox prepare` is its command line.
- `store`: `PreparedDataset`, random-access reads of any span of any stored stream.
- `augment`: pure numpy augmentations (gain, polarity, channel swap, pitch shift) and silence detection.
- `pipeline`: `train_iterator` (grain, deterministic, checkpointable, sharded per host), `eval_batches` and
  `tracks` (whole tracks for evaluation).
"""
