# Data preparation rules.  The top Snakefile includes this file:
#
#     include: "shared/data/data.smk"
#
# and a module's rule that reads a prepared data set declares it as input:
#
#     input: prepared_data("fashion_mnist")
#
# Config keys (top level, both optional):
#   data_dir:        where prepared data sets live (default: $LANDSCAPE_DATA_DIR,
#                    else ~/tensorflow_datasets; shared with tensorflow-datasets).
#   data_manual_dir: {name: folder} to prepare offline from a folder of source files,
#                    e.g. {fashion_mnist: /usr/share/datasets/fashion-mnist,
#                          cifar10_jpeg: ../shared/data}; for cifar10_jpeg the folder
#                    may also be an unpacked ROOT with ROOT/{train,test}/<class>/*.jpg.
#
# Without an offline source the rule downloads (internet and TensorFlow needed).
# prepare_data is a local rule: on a cluster it runs on the submitting node, which
# has the internet access compute nodes usually lack.

import shlex
import sys

from shared.data.paths import MANIFEST_NAME, resolve_data_dir
from shared.data.registry import DATASETS

DATA_DIR = str(resolve_data_dir(config.get("data_dir")))
PREPARABLE_DATA = sorted(name for name, spec in DATASETS.items() if spec.kind == "tfds")


def prepared_data(name):
    """The manifest that marks data set ``name`` as prepared (a rule input)."""
    return f"{DATA_DIR}/{name}/{MANIFEST_NAME}"


def _data_source_flags(wildcards):
    manual = (config.get("data_manual_dir") or {}).get(wildcards.dataset)
    return "--manual-dir " + shlex.quote(str(manual)) if manual else ""


localrules:
    prepare_data,


rule prepare_data:
    output:
        prepared_data("{dataset}"),
    wildcard_constraints:
        dataset="|".join(PREPARABLE_DATA),
    params:
        source=_data_source_flags,
        data_dir=shlex.quote(DATA_DIR),
        python=shlex.quote(sys.executable),
    log:
        f"{DATA_DIR}/logs/prepare_{{dataset}}.log",
    threads: 1
    shell:
        "{params.python} -m shared.data.prepare {wildcards.dataset}"
        " --data-dir {params.data_dir} {params.source} 2>&1 | tee {log}"
