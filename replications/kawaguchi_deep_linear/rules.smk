# Kawaguchi (2016): deep linear networks, no poor local minima, degenerate saddles.
KAWA = "kawaguchi_deep_linear"
KAWA_OUT = f"{RESULTS}/{KAWA}"


rule kawaguchi_critical_points:
    input:
        code=module_code(KAWA),
    output:
        measurements=f"{KAWA_OUT}/measurements/critical_points.json",
        table=f"{KAWA_OUT}/tables/critical_points.csv",
        figures=f"{KAWA_OUT}/figures/critical_points.json",
        fig_spectra=report(f"{KAWA_OUT}/figures/hessian_spectra.png",
                           caption="captions/hessian_spectra.rst", category=KAWA),
        fig_curves=report(f"{KAWA_OUT}/figures/descent_curves.png",
                          caption="captions/descent_curves.rst", category=KAWA),
    params:
        cfg=module_config_json(KAWA),
    benchmark:
        f"{KAWA_OUT}/benchmarks/critical_points.tsv"
    threads: workflow.cores
    shell:
        f"{STEP} {KAWA} critical_points --outdir {KAWA_OUT} --config-json {{params.cfg:q}}"


rule kawaguchi_ensembles:
    input:
        code=module_code(KAWA),
    output:
        measurements=f"{KAWA_OUT}/measurements/ensembles.json",
        runs=f"{KAWA_OUT}/tables/ensemble_runs.csv",
        summary=f"{KAWA_OUT}/tables/ensemble_summary.csv",
        figures=f"{KAWA_OUT}/figures/ensembles.json",
        fig=report(f"{KAWA_OUT}/figures/ensemble_gaps.png",
                   caption="captions/ensemble_gaps.rst", category=KAWA),
    params:
        cfg=module_config_json(KAWA),
    benchmark:
        f"{KAWA_OUT}/benchmarks/ensembles.tsv"
    threads: workflow.cores
    shell:
        f"{STEP} {KAWA} ensembles --outdir {KAWA_OUT} --config-json {{params.cfg:q}}"


rule kawaguchi_escape:
    input:
        code=module_code(KAWA),
    output:
        measurements=f"{KAWA_OUT}/measurements/escape.json",
        table=f"{KAWA_OUT}/tables/escape.csv",
        figures=f"{KAWA_OUT}/figures/escape.json",
        fig=report(f"{KAWA_OUT}/figures/escape.png", caption="captions/escape.rst", category=KAWA),
    params:
        cfg=module_config_json(KAWA),
    benchmark:
        f"{KAWA_OUT}/benchmarks/escape.tsv"
    threads: workflow.cores
    shell:
        f"{STEP} {KAWA} escape --outdir {KAWA_OUT} --config-json {{params.cfg:q}}"


from replications.kawaguchi_deep_linear.settings import tfds_datasets as _kawa_tfds


rule kawaguchi_real_data:
    input:
        code=module_code(KAWA),
        data=[prepared_data(name) for name in _kawa_tfds(RESOLVED[KAWA])],
    output:
        measurements=f"{KAWA_OUT}/measurements/real_data.json",
        runs=f"{KAWA_OUT}/tables/real_data_runs.csv",
        summary=f"{KAWA_OUT}/tables/real_data_summary.csv",
        figures=f"{KAWA_OUT}/figures/real_data.json",
        fig=report(f"{KAWA_OUT}/figures/real_data_gaps.png",
                   caption="captions/real_data_gaps.rst", category=KAWA),
    params:
        cfg=module_config_json(KAWA),
    benchmark:
        f"{KAWA_OUT}/benchmarks/real_data.tsv"
    threads: workflow.cores
    shell:
        f"{STEP} {KAWA} real_data --outdir {KAWA_OUT} --config-json {{params.cfg:q}}"


module_verdict_rules(KAWA, ["critical_points", "ensembles", "escape", "real_data"])
