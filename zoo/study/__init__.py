"""The C2AL evidence study's engine (``bench/c2al_study.py`` is its command line).

Modules, in the order a study uses them:

* :mod:`zoo.study.plan`: the study plan (``bench/c2al_study.yaml``), every key checked;
* :mod:`zoo.study.variants`: the C2AL variants compared with the baseline, by name;
* :mod:`zoo.study.runs`: one seed-paired training run under :mod:`zoo.protocol`;
* :mod:`zoo.study.job`: every run of one (dataset, backbone), validation-only selection, the test
  split sealed until the final runs are known;
* :mod:`zoo.study.report`: the paired statistics, the verdict and the markdown report.
"""
