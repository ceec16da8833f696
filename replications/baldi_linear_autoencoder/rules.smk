# Baldi & Hornik (1989): linear autoencoder critical points and gradient descent.
BALDI = "baldi_linear_autoencoder"
BALDI_OUT = f"{RESULTS}/{BALDI}"


rule baldi_critical_points:
    input:
        code=module_code(BALDI),
    output:
        measurements=f"{BALDI_OUT}/measurements/critical_points.json",
        table=f"{BALDI_OUT}/tables/critical_points.csv",
        figures=f"{BALDI_OUT}/figures/critical_points.json",
        fig_points=report(f"{BALDI_OUT}/figures/critical_points.png",
                          caption="captions/critical_points.rst", category=BALDI),
        fig_slice=report(f"{BALDI_OUT}/figures/saddle_slice.png",
                         caption="captions/saddle_slice.rst", category=BALDI),
    params:
        cfg=module_config_json(BALDI)
    benchmark:
        f"{BALDI_OUT}/benchmarks/critical_points.tsv"
    threads:
        workflow.cores
    shell:
        f"{STEP} {BALDI} critical_points --outdir {BALDI_OUT} --config-json {{params.cfg:q}}"


from replications.baldi_linear_autoencoder.settings import tfds_datasets as _baldi_tfds


rule baldi_gradient_descent:
    input:
        code=module_code(BALDI),
        data=[prepared_data(name) for name in _baldi_tfds(RESOLVED[BALDI])],
    output:
        measurements=f"{BALDI_OUT}/measurements/gradient_descent.json",
        table=f"{BALDI_OUT}/tables/gradient_descent.csv",
        figures=f"{BALDI_OUT}/figures/gradient_descent.json",
        fig=report(f"{BALDI_OUT}/figures/gradient_descent.png",
                   caption="captions/gradient_descent.rst", category=BALDI),
    params:
        cfg=module_config_json(BALDI)
    benchmark:
        f"{BALDI_OUT}/benchmarks/gradient_descent.tsv"
    threads:
        workflow.cores
    shell:
        f"{STEP} {BALDI} gradient_descent --outdir {BALDI_OUT} --config-json {{params.cfg:q}}"


module_verdict_rules(BALDI, ["critical_points", "gradient_descent"])
