"""The only modules that touch the network or run subprocesses (kube, helm, mlflow, prometheus,
logstore, s3, tools). Everything above takes a client as an argument, so it can be tested against
the real local services."""
