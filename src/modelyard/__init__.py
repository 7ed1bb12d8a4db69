"""modelyard: track, register, deploy and monitor machine-learning models.

The public SDK is exactly the names in ``__all__`` (a test keeps it honest)::

    import modelyard
    with modelyard.start_run(experiment="churn", params={"lr": 0.1}) as run:
        run.log_metric("loss", 0.3, step=1)
"""

from modelyard.client.api import (
    active_run,
    collect_garbage,
    count_runs,
    create_experiment,
    delete_experiment,
    delete_run,
    download_artifacts,
    end_run,
    export_metric_history,
    get_experiment,
    get_experiment_by_name,
    get_metric_history,
    get_run,
    get_uri,
    list_artifacts,
    list_experiments,
    restore_experiment,
    restore_run,
    search_runs,
    set_experiment,
    set_uri,
    start_run,
)
from modelyard.client.run import ActiveRun
from modelyard.domain.entities import (
    ArtifactEntry,
    Experiment,
    Metric,
    Run,
    RunInfo,
    RunStatus,
)
from modelyard.domain.paging import Page
from modelyard.errors import (
    AlreadyExists,
    ArtifactNotFound,
    Conflict,
    ExperimentNotFound,
    InvalidArgument,
    InvalidFilter,
    ModelyardError,
    NotFound,
    ParamOverwrite,
    RunNotFound,
    Unavailable,
    UnsafePath,
)
from modelyard.tracking.gc import GcReport

__version__ = "0.1.0"

__all__ = [
    "ActiveRun",
    "AlreadyExists",
    "ArtifactEntry",
    "ArtifactNotFound",
    "Conflict",
    "Experiment",
    "ExperimentNotFound",
    "GcReport",
    "InvalidArgument",
    "InvalidFilter",
    "Metric",
    "ModelyardError",
    "NotFound",
    "Page",
    "ParamOverwrite",
    "Run",
    "RunInfo",
    "RunNotFound",
    "RunStatus",
    "Unavailable",
    "UnsafePath",
    "__version__",
    "active_run",
    "collect_garbage",
    "count_runs",
    "create_experiment",
    "delete_experiment",
    "delete_run",
    "download_artifacts",
    "end_run",
    "export_metric_history",
    "get_experiment",
    "get_experiment_by_name",
    "get_metric_history",
    "get_run",
    "get_uri",
    "list_artifacts",
    "list_experiments",
    "restore_experiment",
    "restore_run",
    "search_runs",
    "set_experiment",
    "set_uri",
    "start_run",
]
