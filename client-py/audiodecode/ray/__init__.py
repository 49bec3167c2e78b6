"""Labeling and decoding on a Ray cluster with Ray Data (``pip install 'audiodecode[ray]'``).

    import audiodecode.ray as adray

    ds = adray.label(paths, "base", concurrency=4, num_cpus=8)   # lazy ray.data.Dataset
    adray.write_manifest(ds, "labels.jsonl")                       # = audiodecode label's
    audio = adray.read_audio("train.jsonl", sr=16000)              # rows with an audio tensor

``label`` runs ``Labeler`` actors through ``map_batches``: each actor owns a daemon with
the model loaded once, and each batch of files is one daemon request, so the files of a
batch are packed into shared windows and batched through the model as in
``audiodecode label`` (whose ``--block`` of 64 files matches ``batch_size=64``). Rows out
are the input columns plus ``LABEL_FIELDS``: the fields of an ``audiodecode label`` line
(``segments`` as JSON text), null where the line has none. A file that cannot be labelled
is a row with ``error`` set, never a failed job; a daemon that dies on a batch is
restarted and the batch relabelled file by file, so a file that kills it is an error row.

One daemon per actor, not one per node (``daemon="node"`` keeps the other, the per-user
daemon all of a node's actors share, for comparison): the actor's reserved CPUs and GPUs
are what its daemon uses (model threads = round(num_cpus), the GPU Ray assigned through
CUDA_VISIBLE_DEVICES), so Ray's accounting stays true; actors with different models do
not evict each other from a shared daemon's one-model cache; and a killed actor takes its
daemon with it (``PR_SET_PDEATHSIG``) instead of leaving one that nobody stops. The cost
is a daemon and model per actor (base int8 on CPU: 1.2-1.6 GB resident while labelling
here) and a model load per actor (re)start. Measured with
``benches/ray_label.py --daemon-modes 16`` (16 real clips, base int8, batches of 8, 2
cores shared with another user's builds, load 4-5, each placement run actor, node, node,
actor): one actor of 2 CPUs took 73 and 96 s with its own daemon, 82 and 73 s with the
node's (no difference beyond the noise); two actors of 1 CPU took 33 and 55 s with their
own daemons, 55 and 50 s sharing the node's (one engine serving both requests).

Fault tolerance: actor pools run with ``max_restarts=-1, max_task_retries=-1`` (Ray
Data's defaults; passing them to ``map_batches`` is deprecated since Ray 2.60): an actor killed mid-batch is restarted (new process, new daemon) and
the batch it held is run again; a task's output is committed only when it returns, so
every input comes out exactly once. If the driver dies, Ray ends the job's actors (and
their daemons with them); ``write_manifest`` has appended whole batches in input order
(at most one torn last line), so running the same command with ``--resume`` skips what
is in the file and labels the rest.

``decode``/``read_audio`` decode in Ray tasks with ``audiodecode.load`` through the
node's per-user daemon. ``read_audio`` lists files, directories and JSONL/CSV/TSV
manifests on the driver and decodes in one task per ``rows_per_block`` files; sharded
datasets (WebDataset tars, Lhotse Shar; local or in object storage) are read one task per
shard, each streaming its shard through its node's daemon. ``write_shards`` packs labelled
rows into shards with ``audiodecode shard`` (label → shard → train).

Workers must be able to import ``audiodecode`` and find its binary (installed on every
node, or PYTHONPATH/AUDIODECODE_BIN in the environment the nodes were started with).

Command line (``audiodecode label --ray`` will exec it; keep it stable)::

    python3 -m audiodecode.ray label INPUT... --out OUT.jsonl [--model M] [--address ADDR]
        [--resume | --overwrite] [--language L] [--device auto|cpu|cuda]
        [--compute-type T] [--beam-size N] [--batch-size 64] [--concurrency N]
        [--cpus-per-actor C] [--gpus-per-actor G] [--quiet]

INPUTs as ``audiodecode label`` reads them; ``--address`` or ``$RAY_ADDRESS`` joins a
cluster, else a local one is started. Default placement: one actor per node with that
node's CPUs (the smallest node's count), or one per GPU when the cluster has GPUs. OUT is
the same manifest ``audiodecode label`` writes (same lines, input order) and either tool
can ``--resume`` the other's. Exit status: 0 done (per-file errors are lines), 1 failed,
2 bad inputs.
"""

from audiodecode.ray._datasets import (
    decode,
    label,
    manifest_line,
    read_audio,
    write_manifest,
    write_shards,
)
from audiodecode.ray._labeler import LABEL_FIELDS, LABEL_SCHEMA, Labeler

__all__ = [
    "LABEL_FIELDS",
    "LABEL_SCHEMA",
    "Labeler",
    "decode",
    "label",
    "manifest_line",
    "read_audio",
    "write_manifest",
    "write_shards",
]
