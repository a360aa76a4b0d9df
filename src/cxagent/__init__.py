"""CX-Fulfillment Agent: find, explain and fix customer-experience regressions."""

from cxagent.errors import (
    CXAgentError,
    DataValidationError,
    OutputExistsError,
    SourceDataError,
    SpecError,
)

__all__ = [
    "CXAgentError",
    "DataValidationError",
    "OutputExistsError",
    "SourceDataError",
    "SpecError",
    "__version__",
]

__version__ = "0.1.0"
