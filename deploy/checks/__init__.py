"""The checks behind deploy/check, one module per job; deploy/check is only the entry point.

Why a package: the checker grew into one file that knew kustomize's download, lote's settings
rules, Kubernetes and Compose invariants, Dockerfile rules and its own self-test at once. Split,
each part is read, changed and tested on its own, and the self-test reuses the very functions the
checks run rather than copies of them.

    common          paths of the repository, CheckError / Unrunnable, expect_none
    tools           installing kustomize (pinned, sha256-checked) and finding hadolint
    settings        lote's settings as lote reads them: keys, tasks, LOTE__ overrides, durations
    kubernetes      rendering the overlays with kustomize, looking objects up in the output
    k8s_schemas     rendered objects against Kubernetes' schemas and the vendored KEDA CRDs
    k8s_workload    the worker Deployment, its container and the settings it runs with
    k8s_invariants  lote's invariants on the worker pod (shutdown, ports, probes, security)
    k8s_scaling     Service, PodDisruptionBudget, KEDA triggers and the cpu/gpu flavours
    compose         compose.yaml against the Compose Specification and lote's invariants
    dockerfiles     hadolint, the final stage of the Dockerfiles, .dockerignore
    report          running one check, printing its line, counting passes and failures
    breakages       the broken copies the self-test feeds, one row each
    self_test       the real files must pass, and every broken copy must be rejected
    main            the list of checks and the command line
"""
