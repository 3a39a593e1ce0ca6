"""fhir-app on Apache Spark: `fhir-app process --engine spark` (job.py) and the registry's
ViewDefinitions over its outputs (views.py).

pyspark is an optional extra (`pip install fhir-app[spark]`, Java 17): only job.py and views.py
import it. tasks.py is the executors' work in plain Python, the single-machine path's own code.
"""
