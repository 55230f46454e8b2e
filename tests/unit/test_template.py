"""Static checks over template.yaml (and its SAM-transformed form): safety, least privilege, contracts."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embrec import config
from embrec_tools.template import load_template, resolve_conditions, resources_of_type

ROOT = Path(__file__).resolve().parents[2]
T = dict[str, Any]

# What each function may touch: S3 actions by key prefix, DynamoDB actions by table (logical ids).
EXPECTED_S3: dict[str, dict[str, set[str]]] = {
    "RecommendFunction": {"s3:GetObject": {"index/*", "deltas/*", "config/*"}},
    "ColdStartFunction": {"s3:GetObject": {"encoder/*", "index/*", "deltas/*", "config/*"}},
    "EventsFunction": {},
    "IngestFunction": {
        "s3:GetObject": {"catalog/incoming/*", "encoder/*", "index/current.json"},
        "s3:PutObject": {"catalog/rejected/*", "catalog/reports/*", "deltas/*"},
    },
    "ImportFunction": {
        "s3:GetObject": {"interactions/incoming/*"},
        "s3:PutObject": {"interactions/rejected/*", "interactions/reports/*"},
    },
    "RebuildFunction": {
        "s3:GetObject": {"index/*", "deltas/*", "encoder/*", "config/*"},
        "s3:PutObject": {"index/*"},
        "s3:AbortMultipartUpload": {"index/*"},
        "s3:DeleteObject": {"index/*", "deltas/*"},
    },
}
EXPECTED_TABLES: dict[str, dict[str, set[str]]] = {
    "RecommendFunction": {
        "InteractionsTable": {"read"},
        "ProfilesTable": {"read"},
        "ImpressionsTable": {"write"},
    },
    "ColdStartFunction": {
        "ProfilesTable": {"read", "write"},
        "InteractionsTable": {"read"},
        "ImpressionsTable": {"write"},
    },
    "EventsFunction": {
        "InteractionsTable": {"read", "write", "delete"},
        "ProfilesTable": {"delete"},
        "IdempotencyTable": {"read", "write", "delete"},
        "ImpressionsTable": {"read", "write"},  # erasure: query by_user, batch deletes
    },
    "IngestFunction": {"ItemsTable": {"read", "write"}, "IdempotencyTable": {"read", "write", "delete"}},
    "ImportFunction": {"InteractionsTable": {"write"}, "IdempotencyTable": {"read", "write", "delete"}},
    # interactions and impressions only through their by_time / by_experiment indexes: the signal window
    # and the A/B report, bounded by time and by the experiment
    "RebuildFunction": {"ItemsTable": {"scan"}, "InteractionsTable": {"read"}, "ImpressionsTable": {"read"}},
}
DDB_KIND = {
    "dynamodb:GetItem": "read",
    "dynamodb:BatchGetItem": "read",
    "dynamodb:Query": "read",
    "dynamodb:Scan": "scan",
    "dynamodb:PutItem": "write",
    "dynamodb:UpdateItem": "write",
    "dynamodb:BatchWriteItem": "write",
    "dynamodb:DeleteItem": "delete",
}
ROUTES = {
    "RecommendFunction": {
        ("GET", "/users/{user_id}/recommendations"),
        ("GET", "/items/{item_id}/similar"),
        ("GET", "/health"),
        ("GET", "/openapi.json"),
    },
    "ColdStartFunction": {("POST", "/users/{user_id}/onboarding"), ("GET", "/search")},
    "EventsFunction": {
        ("POST", "/events"), ("DELETE", "/users/{user_id}"), ("GET", "/users/{user_id}/erasure")
    },
}
PUBLIC_ROUTES = {"/health", "/openapi.json"}
# The one queue each SQS-fed function consumes and re-feeds (continuations of a large file, an erasure's
# next step), and no other.
OWN_QUEUE = {
    "IngestFunction": "IngestQueue",
    "ImportFunction": "ImportQueue",
    "EventsFunction": "ErasureQueue",
}
# The only actions allowed on Resource "*": X-Ray supports no resource-level permissions.
UNSCOPABLE_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


@pytest.fixture(scope="module")
def template() -> T:
    return load_template(ROOT / "template.yaml")


def _props(resource: T) -> T:
    return resource.get("Properties") or {}


def _function_setting(template: T, function_id: str, key: str) -> Any:
    props = _props(template["Resources"][function_id])
    return props[key] if key in props else template["Globals"]["Function"][key]


def _statements(role: T) -> Iterator[T]:
    for policy in _props(role).get("Policies", []):
        statements = policy["PolicyDocument"]["Statement"]
        yield from statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_of(template: T, function_id: str) -> T:
    role_ref = _props(template["Resources"][function_id])["Role"]
    return template["Resources"][role_ref["Fn::GetAtt"][0]]


def _s3_prefix(resource: Any) -> str | None:
    """``"index/*"`` for ``{"Fn::Sub": "${ArtifactBucket.Arn}/index/*"}``; None if not a bucket object ARN."""
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        match = re.fullmatch(r"\$\{ArtifactBucket\.Arn\}/(.+)", resource["Fn::Sub"])
        if match:
            return match.group(1)
    return None


def _table_of(resource: Any) -> str | None:
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        logical, attribute = resource["Fn::GetAtt"]
        if attribute == "Arn" and logical.endswith("Table"):
            return str(logical)
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        # one named index of a table: "${XTable.Arn}/index/<name>"
        match = re.fullmatch(r"\$\{(\w+Table)\.Arn\}/index/[A-Za-z0-9_.\-]+", resource["Fn::Sub"])
        if match:
            return match.group(1)
    return None


# ------------------------------------------------------------------------------------------------ loader
def test_short_form_tags_load_as_long_form(tmp_path: Path) -> None:
    source = tmp_path / "t.yaml"
    source.write_text(
        "Resources:\n  X:\n    Type: T\n    Properties:\n"
        "      A: !Ref P\n      B: !GetAtt Q.Arn\n      C: !Sub '${P}-x'\n"
        "      D: !If [Cond, !Select [0, !Split [',', !Ref P]], !Ref 'AWS::NoValue']\n"
        "      E: !Join ['', [a, !GetAtt [Q, Name]]]\n      F: !Not [!Equals [!Ref P, '']]\n"
    )
    props = load_template(source)["Resources"]["X"]["Properties"]
    assert props["A"] == {"Ref": "P"}
    assert props["B"] == {"Fn::GetAtt": ["Q", "Arn"]}
    assert props["C"] == {"Fn::Sub": "${P}-x"}
    assert props["D"] == {
        "Fn::If": ["Cond", {"Fn::Select": [0, {"Fn::Split": [",", {"Ref": "P"}]}]}, {"Ref": "AWS::NoValue"}]
    }
    assert props["E"] == {"Fn::Join": ["", ["a", {"Fn::GetAtt": ["Q", "Name"]}]]}
    assert props["F"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]}


def test_resolve_conditions_picks_the_auth_branch(template: T) -> None:
    iam = resolve_conditions(template)["Resources"]["HttpApi"]["Properties"]["Auth"]
    jwt = resolve_conditions(template, {"AuthMode": "JWT"})["Resources"]["HttpApi"]["Properties"]["Auth"]
    assert iam == {"DefaultAuthorizer": "AWS_IAM", "EnableIamAuthorizer": True}
    assert jwt["DefaultAuthorizer"] == "JwtAuthorizer"
    assert jwt["Authorizers"]["JwtAuthorizer"]["JwtConfiguration"] == {
        "issuer": {"Ref": "JwtIssuer"},
        "audience": {"Ref": "JwtAudience"},
    }


# ------------------------------------------------------------------------------------------------ packaging
def test_requirements_txt_equals_pyproject_runtime_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lines = (ROOT / "layers/embrec/requirements.txt").read_text().splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert requirements == pyproject["project"]["dependencies"]


def test_functions_and_layer_share_runtime_and_architecture(template: T) -> None:
    functions = resources_of_type(template, "AWS::Serverless::Function")
    assert set(functions) == set(EXPECTED_S3)
    ((layer_id, layer),) = resources_of_type(template, "AWS::Serverless::LayerVersion").items()
    architectures = template["Globals"]["Function"]["Architectures"]
    assert _props(layer)["ContentUri"] == "layers/embrec"
    assert layer["Metadata"]["BuildMethod"] == template["Globals"]["Function"]["Runtime"] == "python3.12"
    assert _props(layer)["CompatibleArchitectures"] == architectures
    assert [layer["Metadata"]["BuildArchitecture"]] == architectures
    for function_id, function in functions.items():
        props = _props(function)
        assert "Architectures" not in props and "Runtime" not in props, function_id
        assert (ROOT / props["CodeUri"]).parent == ROOT / "functions", function_id
        assert _function_setting(template, function_id, "Layers") == [{"Ref": layer_id}]
        assert props["MemorySize"] and props["Timeout"], function_id


def test_environment_names_are_the_settings_constants(template: T) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    known = {value for name, value in vars(config).items() if name.startswith("ENV_")}
    embrec_vars = {name for name in variables if name.startswith("EMBREC_")}
    assert embrec_vars <= known
    for name, logical in (
        (config.ENV_BUCKET, "ArtifactBucket"),
        (config.ENV_ITEMS_TABLE, "ItemsTable"),
        (config.ENV_INTERACTIONS_TABLE, "InteractionsTable"),
        (config.ENV_PROFILES_TABLE, "ProfilesTable"),
        (config.ENV_IDEMPOTENCY_TABLE, "IdempotencyTable"),
        (config.ENV_IMPRESSIONS_TABLE, "ImpressionsTable"),
        (config.ENV_INGEST_QUEUE_URL, "IngestQueue"),
        (config.ENV_IMPORT_QUEUE_URL, "ImportQueue"),
    ):
        assert variables[name] == {"Ref": logical}
    assert variables[config.ENV_EVENT_TTL_DAYS] == {"Ref": "EventTtlDays"}


# ------------------------------------------------------------------------------------------------ API
def test_routes_and_auth(template: T) -> None:
    seen: dict[str, set[tuple[str, str]]] = {}
    for function_id, function in resources_of_type(template, "AWS::Serverless::Function").items():
        for event in _props(function).get("Events", {}).values():
            if event["Type"] != "HttpApi":
                continue
            props = event["Properties"]
            assert props["ApiId"] == {"Ref": "HttpApi"}
            seen.setdefault(function_id, set()).add((props["Method"], props["Path"]))
            authorizer = (props.get("Auth") or {}).get("Authorizer")
            assert (authorizer == "NONE") == (props["Path"] in PUBLIC_ROUTES), props["Path"]
    assert seen == ROUTES
    api = _props(template["Resources"]["HttpApi"])
    assert api["CorsConfiguration"]["AllowOrigins"] == {"Ref": "CorsAllowedOrigins"}
    assert template["Parameters"]["CorsAllowedOrigins"]["Type"] == "CommaDelimitedList"
    assert "*" not in template["Parameters"]["CorsAllowedOrigins"]["Default"]
    assert api["DefaultRouteSettings"]["ThrottlingBurstLimit"] == {"Ref": "ThrottlingBurst"}
    assert api["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ThrottlingRate"}
    assert template["Parameters"]["AuthMode"]["Default"] == "AWS_IAM"


# ------------------------------------------------------------------------------------------------ queues
def test_every_queue_has_a_dead_letter_queue_with_an_alarm(template: T) -> None:
    queues = resources_of_type(template, "AWS::SQS::Queue")
    redrive_targets = {
        _props(q)["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for q in queues.values()
        if "RedrivePolicy" in _props(q)
    }
    schedule_targets = {
        event["Properties"]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
        for function in resources_of_type(template, "AWS::Serverless::Function").values()
        for event in _props(function).get("Events", {}).values()
        if event["Type"] == "ScheduleV2"
    }
    dead_letter_queues = redrive_targets | schedule_targets
    for queue_id, queue in queues.items():
        props = _props(queue)
        assert props.get("SqsManagedSseEnabled") is True, queue_id
        if queue_id in dead_letter_queues:
            assert "RedrivePolicy" not in props
            assert props["MessageRetentionPeriod"] == 1209600
        else:
            assert props["RedrivePolicy"]["maxReceiveCount"] == 5
            assert props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0] in queues
    alarmed = {
        _props(alarm)["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        if _props(alarm)["MetricName"] == "ApproximateNumberOfMessagesVisible"
        and _props(alarm)["Threshold"] == 0
        and _props(alarm)["ComparisonOperator"] == "GreaterThanThreshold"
    }
    assert dead_letter_queues and dead_letter_queues == alarmed


@pytest.mark.parametrize("function_id", sorted(OWN_QUEUE))
def test_ingest_queue_visibility_covers_six_ingest_timeouts(template: T, function_id: str) -> None:
    queue_id = OWN_QUEUE[function_id]
    events = _props(template["Resources"][function_id])["Events"].values()
    (event,) = [e for e in events if e["Type"] == "SQS"]
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["BatchSize"] == 1
    timeout = _function_setting(template, function_id, "Timeout")
    assert _props(template["Resources"][queue_id])["VisibilityTimeout"] >= 6 * timeout


def test_rebuild_schedule_retries_into_a_dead_letter_queue(template: T) -> None:
    rebuild = _props(template["Resources"]["RebuildFunction"])
    assert rebuild["ReservedConcurrentExecutions"] == 1
    (event,) = rebuild["Events"].values()
    assert event["Type"] == "ScheduleV2"
    props = event["Properties"]
    assert props["ScheduleExpression"] == {"Ref": "RebuildRate"}
    assert "${AWS::StackName}" in props["Name"]["Fn::Sub"], "two stacks in one region must not collide"
    assert template["Parameters"]["RebuildRate"]["Default"] == "rate(1 hour)"
    assert props["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert props["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["RebuildDeadLetterQueue", "Arn"]}


def test_a_failing_rebuild_is_not_retried_and_lands_in_the_dead_letter_queue(template: T) -> None:
    # The schedule invokes asynchronously: without EventInvokeConfig Lambda retries a failed run twice and
    # then drops it; the schedule's DeadLetterConfig only sees delivery failures.
    config = _props(template["Resources"]["RebuildFunction"])["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 0
    assert 60 <= config["MaximumEventAgeInSeconds"] <= 21600
    failure = config["DestinationConfig"]["OnFailure"]
    assert failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["RebuildDeadLetterQueue", "Arn"]}}
    granted = {
        (action, json.dumps(resource, sort_keys=True))
        for statement in _statements(_role_of(template, "RebuildFunction"))
        for action in _as_list(statement["Action"])
        for resource in _as_list(statement["Resource"])
    }
    assert ("sqs:SendMessage", json.dumps(failure["Destination"], sort_keys=True)) in granted


@pytest.mark.parametrize(
    "metric", ["METRIC_SHRINK_REFUSED", "METRIC_INGEST_MESSAGES_REFUSED", "METRIC_INDEX_REFUSED"]
)
def test_each_metric_of_refused_work_has_an_alarm(template: T, metric: str) -> None:
    import embrec.observability as observability
    from embrec.observability import NAMESPACE, SERVICE

    alarms = [
        _props(alarm)
        for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values()
        if _props(alarm)["MetricName"] == getattr(observability, metric)
    ]
    assert len(alarms) == 1
    (alarm,) = alarms
    assert alarm["Namespace"] == NAMESPACE and alarm["Threshold"] == 0
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    # single_metric writes the dimension Powertools' service name gives it, which the functions set
    assert alarm["Dimensions"] == [{"Name": "service", "Value": SERVICE}]
    assert template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == SERVICE
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


# ------------------------------------------------------------------------------------------------ storage
def test_tables_keys_ttl_pitr_retention(template: T) -> None:
    tables = resources_of_type(template, "AWS::DynamoDB::Table")
    expected = {
        "ItemsTable": ({"item_id": "HASH"}, None),
        "InteractionsTable": ({"user_id": "HASH", "sk": "RANGE"}, "expires_at"),
        "ProfilesTable": ({"user_id": "HASH"}, None),
        "IdempotencyTable": ({"id": "HASH"}, "expiration"),
        "ImpressionsTable": ({"recommendation_id": "HASH"}, "expires_at"),
    }
    indexes = {
        "ImpressionsTable": {"by_user": {"user_id": "HASH"}, "by_experiment": {"xs": "HASH", "ts": "RANGE"}},
        "InteractionsTable": {"by_time": {"tb": "HASH", "ts": "RANGE"}},
    }
    numeric = {"ts"}
    assert set(tables) == set(expected)
    for table_id, table in tables.items():
        props = _props(table)
        keys, ttl = expected[table_id]
        assert {k["AttributeName"]: k["KeyType"] for k in props["KeySchema"]} == keys
        index_keys = {
            index["IndexName"]: {k["AttributeName"]: k["KeyType"] for k in index["KeySchema"]}
            for index in props.get("GlobalSecondaryIndexes", [])
        }
        assert index_keys == indexes.get(table_id, {}), table_id
        indexed = {name for keys_of_index in index_keys.values() for name in keys_of_index}
        assert {
            a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]
        } == {name: "N" if name in numeric else "S" for name in [*keys, *sorted(indexed - set(keys))]}
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"
        if ttl is None:
            assert "TimeToLiveSpecification" not in props
        else:
            assert props["TimeToLiveSpecification"] == {"AttributeName": ttl, "Enabled": True}


def test_bucket_is_versioned_encrypted_private_and_tls_only(template: T) -> None:
    ((bucket_id, bucket),) = resources_of_type(template, "AWS::S3::Bucket").items()
    props = _props(bucket)
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    block = props["PublicAccessBlockConfiguration"]
    assert set(block) == {"BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"}
    assert all(value is True for value in block.values())
    (policy,) = resources_of_type(template, "AWS::S3::BucketPolicy").values()
    assert _props(policy)["Bucket"] == {"Ref": bucket_id}
    denies = [s for s in _props(policy)["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    tls = [s for s in denies if s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert len(tls) == 1
    assert tls[0]["Action"] == "s3:*" and tls[0]["Principal"] == "*"
    assert tls[0]["Resource"] == [
        {"Fn::GetAtt": [bucket_id, "Arn"]},
        {"Fn::Sub": f"${{{bucket_id}.Arn}}/*"},
    ]


def test_only_catalog_incoming_notifies_and_no_function_writes_there(template: T) -> None:
    (bucket,) = resources_of_type(template, "AWS::S3::Bucket").values()
    catalog, history = _props(bucket)["NotificationConfiguration"]["QueueConfigurations"]
    assert catalog["Queue"] == {"Fn::GetAtt": ["IngestQueue", "Arn"]}
    assert catalog["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "catalog/incoming/"}]
    assert history["Queue"] == {"Fn::GetAtt": ["ImportQueue", "Arn"]}
    assert history["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "interactions/incoming/"}]
    for function_id, actions in EXPECTED_S3.items():
        for prefix in actions.get("s3:PutObject", set()):
            assert not prefix.startswith(("catalog/incoming/", "interactions/incoming/")), function_id


@pytest.mark.parametrize("policy_id", ["IngestQueuePolicy", "ImportQueuePolicy"])
def test_queue_policy_names_the_bucket_without_a_cycle(template: T, policy_id: str) -> None:
    bucket = template["Resources"]["ArtifactBucket"]
    assert bucket["DependsOn"] == ["IngestQueuePolicy", "ImportQueuePolicy"]
    (statement,) = _props(template["Resources"][policy_id])["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    source_arn = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    name = _props(bucket)["BucketName"]["Fn::Sub"]
    # the same name expression, and no Ref/GetAtt to the bucket (that would be a dependency cycle)
    assert source_arn[0] == "arn:${AWS::Partition}:s3:::" + name[0]
    assert source_arn[1] == name[1]
    assert "ArtifactBucket" not in json.dumps(statement)


# ------------------------------------------------------------------------------------------------ IAM
def test_no_wildcard_actions_or_resources_in_any_allow(template: T) -> None:
    for role_id, role in resources_of_type(template, "AWS::IAM::Role").items():
        assert "ManagedPolicyArns" not in _props(role), role_id
        for statement in _statements(role):
            assert statement["Effect"] == "Allow"
            for action in _as_list(statement["Action"]):
                assert "*" not in action, (role_id, action)
            for resource in _as_list(statement["Resource"]):
                assert resource != "*" or set(_as_list(statement["Action"])) <= UNSCOPABLE_ACTIONS, role_id
                if isinstance(resource, dict) and "Fn::Sub" in resource:
                    scoped = _s3_prefix(resource) not in (None, "*") or _table_of(resource) is not None
                    assert scoped, (role_id, resource)


def test_each_function_reaches_only_its_prefixes_and_tables(template: T) -> None:
    roles = resources_of_type(template, "AWS::IAM::Role")
    used_roles = set()
    for function_id in EXPECTED_S3:
        role_id = _props(template["Resources"][function_id])["Role"]["Fn::GetAtt"][0]
        assert role_id not in used_roles, "each function has its own role"
        used_roles.add(role_id)
        s3: dict[str, set[str]] = {}
        listable: set[str] = set()
        tables: dict[str, set[str]] = {}
        queue_actions: set[str] = set()
        for statement in _statements(roles[role_id]):
            for action in _as_list(statement["Action"]):
                for resource in _as_list(statement["Resource"]):
                    if action == "s3:ListBucket":
                        assert resource == {"Fn::GetAtt": ["ArtifactBucket", "Arn"]}
                        listable |= set(statement["Condition"]["StringLike"]["s3:prefix"])
                    elif action.startswith("s3:"):
                        prefix = _s3_prefix(resource)
                        assert prefix is not None, (function_id, action, resource)
                        s3.setdefault(action, set()).add(prefix)
                    elif action.startswith("dynamodb:"):
                        table = _table_of(resource)
                        assert table is not None, (function_id, action, resource)
                        tables.setdefault(table, set()).add(DDB_KIND[action])
                    elif action.startswith("logs:"):
                        assert resource["Fn::GetAtt"][0].endswith("LogGroup")
                    elif action in UNSCOPABLE_ACTIONS:
                        assert resource == "*"
                    elif function_id == "RebuildFunction":  # its on-failure destination, nothing else
                        assert action == "sqs:SendMessage", action
                        assert resource == {"Fn::GetAtt": ["RebuildDeadLetterQueue", "Arn"]}
                    else:
                        assert action.startswith("sqs:"), action
                        assert resource == {"Fn::GetAtt": [OWN_QUEUE[function_id], "Arn"]}, function_id
                        queue_actions.add(action)
        assert s3 == EXPECTED_S3[function_id], function_id
        assert tables == EXPECTED_TABLES[function_id], function_id
        if function_id in OWN_QUEUE:  # consume, and queue the rest of a large file / of an erasure
            assert queue_actions == {
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
                "sqs:SendMessage",
            }
        readable = EXPECTED_S3[function_id].get("s3:GetObject", set())
        assert listable == readable, function_id
    assert used_roles == set(roles)


# ------------------------------------------------------------------------------------------------ SAM
@pytest.fixture(scope="module", params=["AWS_IAM", "JWT"])
def transformed(request: pytest.FixtureRequest, template: T) -> tuple[str, T]:
    """The CloudFormation the SAM transform makes (offline; managed policies are never looked up)."""
    translator = pytest.importorskip("samtranslator.translator.transform")
    mode = request.param
    parameters: dict[str, Any] = {
        "AuthMode": mode,
        "JwtIssuer": "https://issuer.example",
        "JwtAudience": ["a"],
    }
    resolved = resolve_conditions(template, parameters)
    for resource in resolved["Resources"].values():  # what `sam package` does: local paths -> S3 URIs
        for key in ("CodeUri", "ContentUri"):
            if key in _props(resource):
                resource["Properties"][key] = f"s3://artifacts/{resource['Properties'][key]}"

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        output = translator.transform(
            resolved, {**parameters, "AWS::Region": "us-east-1"}, NoManagedPolicies()
        )
    return mode, output


def test_transformed_routes_carry_the_chosen_authorizer(transformed: tuple[str, T]) -> None:
    mode, output = transformed
    body = output["Resources"]["HttpApi"]["Properties"]["Body"]
    expected = "AWS_IAM" if mode == "AWS_IAM" else "JwtAuthorizer"
    routes = {(method.upper(), path) for path, ops in body["paths"].items() for method in ops}
    assert routes == set().union(*ROUTES.values())
    for path, operations in body["paths"].items():
        for operation in operations.values():
            assert operation["security"] == [{"NONE" if path in PUBLIC_ROUTES else expected: []}], path
    schemes = body["components"]["securitySchemes"]
    assert set(schemes) == {expected}
    if mode == "JWT":
        jwt = schemes["JwtAuthorizer"]["x-amazon-apigateway-authorizer"]
        assert jwt["type"] == "jwt"
        assert jwt["jwtConfiguration"] == {"issuer": {"Ref": "JwtIssuer"}, "audience": {"Ref": "JwtAudience"}}


def test_transformed_roles_add_no_managed_or_wildcard_policies(transformed: tuple[str, T]) -> None:
    _, output = transformed
    roles = resources_of_type(output, "AWS::IAM::Role")
    # the six function roles plus the scheduler's, which SAM generates scoped to the function and its DLQ
    assert len(roles) == 7
    for role_id, role in roles.items():
        assert not _props(role).get("ManagedPolicyArns"), role_id
        for statement in _statements(role):
            actions = _as_list(statement["Action"])
            for action in actions:
                assert "*" not in action, (role_id, action)
            assert "*" not in _as_list(statement["Resource"]) or set(actions) <= UNSCOPABLE_ACTIONS, role_id
    (schedule,) = resources_of_type(output, "AWS::Scheduler::Schedule").values()
    target = _props(schedule)["Target"]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["RebuildDeadLetterQueue", "Arn"]}}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    mappings = resources_of_type(output, "AWS::Lambda::EventSourceMapping").values()
    assert len(mappings) == 3  # the ingest, import and erasure queues
    assert all(_props(m)["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings)


def test_jwt_mode_refuses_to_deploy_without_issuer_and_audience(template: T) -> None:
    rule = template["Rules"]["JwtNeedsIssuerAndAudience"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "AuthMode"}, "JWT"]}
    asserts = [a["Assert"] for a in rule["Assertions"]]
    assert {"Fn::Not": [{"Fn::Equals": [{"Ref": "JwtIssuer"}, ""]}]} in asserts
    assert {"Fn::Not": [{"Fn::Contains": [{"Ref": "JwtAudience"}, ""]}]} in asserts
