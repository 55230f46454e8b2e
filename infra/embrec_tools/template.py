"""template.yaml as data: load it, and create its stateful resources on any AWS endpoint (moto, LocalStack).

The local stack and the integration tests build the bucket, queues and tables from the template's own
definitions (key schemas, TTL, redrive, the S3 -> SQS notification), so they cannot drift from what
``sam deploy`` creates. Physical names are fixed locally (``embrec-local``, ``embrec-items`` ...) and match
the :class:`embrec.config.Settings` defaults; :func:`settings_env` gives the environment that points
``Settings.from_env`` at them.

CloudFormation short-form tags (``!Ref``, ``!GetAtt``, ``!Sub``, ``!If`` ...) load as their long form
(``{"Ref": ...}``, ``{"Fn::GetAtt": [...]}``) through :class:`CfnLoader`, a ``yaml.SafeLoader`` subclass.
Only used off Lambda (local stack, tests, CLI); nothing here runs at import time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from embrec.config import ENV_AWS_REGION, Settings
from embrec.errors import InvalidInputError

__all__ = [
    "CfnLoader",
    "LocalResources",
    "create_local_resources",
    "default_template_path",
    "load_template",
    "local_names",
    "resolve_conditions",
    "resources_of_type",
    "settings_env",
]

Template = dict[str, Any]

# Tags whose long form is "Fn::<Name>"; Ref and Condition keep their bare names.
_FN_TAGS = (
    "And", "Base64", "Cidr", "Equals", "FindInMap", "GetAZs", "If", "ImportValue", "Join", "Length", "Not",
    "Or", "Select", "Split", "Sub", "ToJsonString", "Transform", "ForEach",
    # rule-specific functions (the template's Rules section)
    "Contains", "EachMemberEquals", "EachMemberIn", "RefAll", "ValueOf", "ValueOfAll",
)  # fmt: skip


class CfnLoader(yaml.SafeLoader):
    """A safe YAML loader that understands CloudFormation's short-form intrinsic tags."""


def _construct_node(loader: CfnLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise InvalidInputError("template", f"unsupported YAML node {node!r}")


def _fn_constructor(name: str) -> Any:
    key = name if name in ("Ref", "Condition") else f"Fn::{name}"

    def construct(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
        return {key: _construct_node(loader, node)}

    return construct


def _get_att(loader: CfnLoader, node: yaml.Node) -> dict[str, Any]:
    value = _construct_node(loader, node)
    if isinstance(value, str):  # !GetAtt Resource.Attribute (the attribute may itself hold dots)
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {"Fn::GetAtt": value}


for _name in (*_FN_TAGS, "Ref", "Condition"):
    CfnLoader.add_constructor(f"!{_name}", _fn_constructor(_name))
CfnLoader.add_constructor("!GetAtt", _get_att)


def default_template_path() -> Path:
    """The repository's template.yaml (this file sits at infra/embrec_tools/template.py)."""
    return Path(__file__).resolve().parents[2] / "template.yaml"


def load_template(path: Path | str | None = None) -> Template:
    """Parse a CloudFormation/SAM YAML template into plain dicts (intrinsics in long form)."""
    source = Path(path) if path is not None else default_template_path()
    with source.open("r", encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=CfnLoader)
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise InvalidInputError("template", f"{source} has no Resources mapping")
    return document


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """``{logical_id: resource}`` for every resource of ``resource_type``, in template order."""
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == resource_type
    }


# ---------------------------------------------------------------------------------------------- conditions
def _parameter_values(template: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, spec in (template.get("Parameters") or {}).items():
        default = spec.get("Default")
        if spec.get("Type") == "CommaDelimitedList" and isinstance(default, str):
            default = [part.strip() for part in default.split(",")]
        values[name] = default
    values.update(overrides or {})
    return values


def _evaluate(
    expr: Any, params: Mapping[str, Any], conditions: Mapping[str, Any], memo: dict[str, bool]
) -> Any:
    if isinstance(expr, dict) and len(expr) == 1:
        ((key, arg),) = expr.items()
        if key == "Ref":
            return params.get(arg, arg)
        if key == "Condition":
            if arg not in memo:
                memo[arg] = bool(_evaluate(conditions[arg], params, conditions, memo))
            return memo[arg]
        if key == "Fn::Equals":
            left, right = (_evaluate(a, params, conditions, memo) for a in arg)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not _evaluate(arg[0], params, conditions, memo)
        if key == "Fn::And":
            return all(_evaluate(a, params, conditions, memo) for a in arg)
        if key == "Fn::Or":
            return any(_evaluate(a, params, conditions, memo) for a in arg)
        if key == "Fn::Join":
            parts = _evaluate(arg[1], params, conditions, memo)
            return str(arg[0]).join(str(p) for p in parts)
    return expr


_NO_VALUE = object()


def _replace_ifs(node: Any, truth: Mapping[str, bool]) -> Any:
    if isinstance(node, dict):
        if len(node) == 1 and "Fn::If" in node:
            name, when_true, when_false = node["Fn::If"]
            return _replace_ifs(when_true if truth[name] else when_false, truth)
        if node == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        out = {k: _replace_ifs(v, truth) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not _NO_VALUE}
    if isinstance(node, list):
        items = [_replace_ifs(v, truth) for v in node]
        return [v for v in items if v is not _NO_VALUE]
    return node


def resolve_conditions(template: Mapping[str, Any], parameters: Mapping[str, Any] | None = None) -> Template:
    """A copy of ``template`` with parameter-only conditions applied, as AWS::LanguageExtensions does.

    Every ``Fn::If`` becomes its chosen branch (``AWS::NoValue`` drops the key), resources and outputs whose
    ``Condition`` is false are removed, and the ``AWS::LanguageExtensions`` transform is taken off, so the
    result can go straight to the SAM translator. ``parameters`` override the template's defaults.
    """
    params = _parameter_values(template, parameters)
    conditions = template.get("Conditions") or {}
    memo: dict[str, bool] = {}
    truth = {name: bool(_evaluate({"Condition": name}, params, conditions, memo)) for name in conditions}
    resolved: Template = _replace_ifs(json.loads(json.dumps(template)), truth)
    for section in ("Resources", "Outputs"):
        entries = resolved.get(section) or {}
        for logical_id in [k for k, v in entries.items() if "Condition" in v and not truth[v["Condition"]]]:
            del entries[logical_id]
    transform = resolved.get("Transform")
    if isinstance(transform, list):
        resolved["Transform"] = [t for t in transform if t != "AWS::LanguageExtensions"]
        if len(resolved["Transform"]) == 1:
            resolved["Transform"] = resolved["Transform"][0]
    return resolved


# ---------------------------------------------------------------------------------------------- local stack
def _kebab(logical_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", logical_id).lower()


def local_names(settings: Settings | None = None) -> dict[str, str]:
    """Physical names of the local stack, by logical id; the tables and bucket match ``Settings``."""
    s = settings or Settings()
    return {
        "ArtifactBucket": s.bucket,
        "ItemsTable": s.items_table,
        "InteractionsTable": s.interactions_table,
        "ProfilesTable": s.profiles_table,
        "IdempotencyTable": s.idempotency_table,
        "ImpressionsTable": s.impressions_table,
        "IngestQueue": "embrec-ingest",
        "IngestDeadLetterQueue": "embrec-ingest-dlq",
        "ImportQueue": "embrec-import",
        "ImportDeadLetterQueue": "embrec-import-dlq",
        "ErasureQueue": "embrec-erasure",
        "ErasureDeadLetterQueue": "embrec-erasure-dlq",
        "RebuildDeadLetterQueue": "embrec-rebuild-dlq",
    }


@dataclass(frozen=True)
class LocalResources:
    """What :func:`create_local_resources` made: physical names (tables, bucket), queue URLs and ARNs."""

    bucket: str
    tables: dict[str, str] = field(default_factory=dict)
    queue_urls: dict[str, str] = field(default_factory=dict)
    queue_arns: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    bucket_id: str = "ArtifactBucket"

    def physical(self, logical_id: str) -> str | None:
        """The value ``Ref`` would give in CloudFormation (bucket/table name, queue URL)."""
        if logical_id == self.bucket_id:
            return self.bucket
        if logical_id in self.tables:
            return self.tables[logical_id]
        if logical_id in self.queue_urls:
            return self.queue_urls[logical_id]
        return None


def _client(clients: Any, name: str) -> Any:
    if isinstance(clients, Mapping):
        return clients[name]
    return getattr(clients, name)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _create_bucket(s3: Any, name: str, props: Mapping[str, Any], region: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except Exception as exc:
        if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    status = (props.get("VersioningConfiguration") or {}).get("Status")
    if status:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
    encryption = props.get("BucketEncryption")
    if encryption:
        rules = [
            {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
            for rule in encryption["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    block = props.get("PublicAccessBlockConfiguration")
    if block:
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=dict(block))


def _queue_order(queues: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Dead-letter targets first, so a redrive policy can name an existing ARN."""

    def is_target(logical_id: str) -> bool:
        return any(
            _ref_target(((q.get("Properties") or {}).get("RedrivePolicy") or {}).get("deadLetterTargetArn"))
            == logical_id
            for q in queues.values()
        )

    return sorted(queues, key=lambda logical_id: 0 if is_target(logical_id) else 1)


def _ref_target(value: Any) -> str | None:
    """The logical id behind ``{"Ref": X}`` or ``{"Fn::GetAtt": [X, ...]}``, else None."""
    if isinstance(value, dict):
        if "Ref" in value:
            return str(value["Ref"])
        if "Fn::GetAtt" in value:
            return str(value["Fn::GetAtt"][0])
    return None


def create_local_resources(
    template: Mapping[str, Any],
    clients: Any,
    names: Mapping[str, str] | None = None,
    region: str = "us-east-1",
) -> LocalResources:
    """Create the template's bucket, queues, tables and S3 -> SQS notification on the clients' endpoint.

    ``clients`` has ``s3``, ``sqs`` and ``dynamodb`` boto3 clients (attributes or mapping keys); ``names``
    maps logical ids to physical names (default :func:`local_names`). Idempotent: existing resources are
    kept. Raises :class:`InvalidInputError` if the template has a stateful resource with no local name.
    """
    physical = dict(local_names() if names is None else names)

    def name_of(logical_id: str) -> str:
        if logical_id not in physical:
            physical[logical_id] = f"embrec-{_kebab(logical_id)}"
        return physical[logical_id]

    s3, sqs, dynamodb = (_client(clients, n) for n in ("s3", "sqs", "dynamodb"))

    queue_urls: dict[str, str] = {}
    queue_arns: dict[str, str] = {}
    queues = resources_of_type(template, "AWS::SQS::Queue")
    for logical_id in _queue_order(queues):
        props = queues[logical_id].get("Properties") or {}
        attributes: dict[str, str] = {}
        for key in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
        ):
            if key in props:
                attributes[key] = str(props[key])
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = _ref_target(redrive["deadLetterTargetArn"])
            if target not in queue_arns:
                raise InvalidInputError(logical_id, f"dead-letter target {target!r} is not a queue")
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": queue_arns[target],
                    "maxReceiveCount": int(redrive["maxReceiveCount"]),
                }
            )
        url = sqs.create_queue(QueueName=name_of(logical_id), Attributes=attributes)["QueueUrl"]
        queue_urls[logical_id] = url
        queue_arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

    tables: dict[str, str] = {}
    for logical_id, resource in resources_of_type(template, "AWS::DynamoDB::Table").items():
        props = resource.get("Properties") or {}
        table = name_of(logical_id)
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in props:
                kwargs[key] = props[key]
        try:
            dynamodb.create_table(**kwargs)
        except Exception as exc:
            if _error_code(exc) != "ResourceInUseException":
                raise
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=table,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
        tables[logical_id] = table

    buckets = resources_of_type(template, "AWS::S3::Bucket")
    if len(buckets) != 1:
        raise InvalidInputError("template", f"expected one S3 bucket, found {len(buckets)}")
    ((bucket_id, bucket_resource),) = buckets.items()
    bucket = name_of(bucket_id)
    bucket_props = bucket_resource.get("Properties") or {}
    _create_bucket(s3, bucket, bucket_props, region)
    queue_configs = []
    for config in (bucket_props.get("NotificationConfiguration") or {}).get("QueueConfigurations", []):
        target = _ref_target(config["Queue"])
        if target not in queue_arns:
            raise InvalidInputError(bucket_id, f"notification target {target!r} is not a queue")
        entry: dict[str, Any] = {"QueueArn": queue_arns[target], "Events": [config["Event"]]}
        rules = ((config.get("Filter") or {}).get("S3Key") or {}).get("Rules")
        if rules:
            entry["Filter"] = {
                "Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}
            }
        queue_configs.append(entry)
    if queue_configs:
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queue_configs}
        )
    return LocalResources(
        bucket=bucket,
        tables=tables,
        queue_urls=queue_urls,
        queue_arns=queue_arns,
        region=region,
        bucket_id=bucket_id,
    )


def settings_env(template: Mapping[str, Any], resources: LocalResources) -> dict[str, str]:
    """The ``EMBREC_*`` environment the template gives every function, pointed at the local resources.

    Read from the template's ``Globals.Function.Environment``: a ``Ref`` to a created resource becomes its
    local name or queue URL, a ``Ref`` to a parameter its default, literals stay. Feed the result (plus an
    endpoint) to ``Settings.from_env``.
    """
    variables = (((template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}).get(
        "Variables"
    ) or {}
    params = _parameter_values(template, None)
    env: dict[str, str] = {}
    for name, value in variables.items():
        if not name.startswith("EMBREC_"):
            continue
        target = _ref_target(value)
        if target is not None and "Ref" in value:
            resolved = resources.physical(target)
            if resolved is None and target in params:
                resolved = str(params[target])
            if resolved is None:
                raise InvalidInputError(name, f"{target!r} was not created locally")
            env[name] = resolved
        elif isinstance(value, str | int | float):
            env[name] = str(value)
    env[ENV_AWS_REGION] = resources.region
    return env
