"""kiln.yaml: pydantic models, a loader that reports file:line:column, and the JSON Schema."""

from kiln.config.loader import LoadedConfig, import_object, load_config, parse_config, pythonpath
from kiln.config.models import PipelineConfig

__all__ = [
    "LoadedConfig",
    "PipelineConfig",
    "import_object",
    "json_schema",
    "load_config",
    "parse_config",
    "pythonpath",
]


def json_schema() -> dict[str, object]:
    schema = PipelineConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kiln.yaml"
    return schema
