"""Create the S3 bucket and DynamoDB table the `aws` output store needs (`cosmo aws init`).

Idempotent: what exists is left as it is (a table missing one of our indexes gets it
added), so running it on every deploy is safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from core.outputs.aws_store import INDEXES

WAIT_DELAY_SECONDS = 2
WAIT_MAX_ATTEMPTS = 300  # ten minutes: a GSI on a large table takes a while to build


@dataclass
class SetupReport:
    """What `ensure_bucket_and_table` found and what it created."""

    bucket_created: bool = False
    table_created: bool = False
    indexes_created: list[str] = field(default_factory=list)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _index_definition(name: str) -> dict[str, Any]:
    hash_key, range_key = INDEXES[name]
    return {
        "IndexName": name,
        "KeySchema": [
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": range_key, "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "ALL"},
    }


def _attribute_definitions(names: set[str]) -> list[dict[str, str]]:
    return [{"AttributeName": n, "AttributeType": "S"} for n in sorted(names)]


def ensure_bucket(s3: Any, bucket: str) -> bool:
    """Create `bucket` unless it exists; True when created."""
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise  # 403: the name belongs to someone else, or our credentials may not look
    kwargs: dict[str, Any] = {"Bucket": bucket}
    region = s3.meta.region_name
    if region and region != "us-east-1":  # us-east-1 refuses an explicit constraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if _code(exc) == "BucketAlreadyOwnedByYou":
            return False
        raise
    s3.get_waiter("bucket_exists").wait(
        Bucket=bucket, WaiterConfig={"Delay": WAIT_DELAY_SECONDS, "MaxAttempts": 30}
    )
    return True


def ensure_table(dynamodb: Any, table: str) -> tuple[bool, list[str]]:
    """Create `table` with every index unless it exists; add indexes it lacks.

    Returns (table created, indexes added to an existing table). Waits until the table and
    its indexes are ACTIVE.
    """
    try:
        described = dynamodb.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise
        described = None
    if described is None:
        keys = {"id"} | {k for pair in INDEXES.values() for k in pair}
        try:
            dynamodb.create_table(
                TableName=table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=_attribute_definitions(keys),
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                GlobalSecondaryIndexes=[_index_definition(n) for n in INDEXES],
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":  # another `init` got there first
                raise
        _wait_active(dynamodb, table)
        return True, []
    existing = {i["IndexName"] for i in described.get("GlobalSecondaryIndexes", ())}
    added = [name for name in INDEXES if name not in existing]
    for name in added:  # DynamoDB builds one new index per UpdateTable call
        _wait_active(dynamodb, table)
        dynamodb.update_table(
            TableName=table,
            AttributeDefinitions=_attribute_definitions(set(INDEXES[name])),
            GlobalSecondaryIndexUpdates=[{"Create": _index_definition(name)}],
        )
    _wait_active(dynamodb, table)
    return False, added


def _wait_active(dynamodb: Any, table: str) -> None:
    """Until the table and every index on it are ACTIVE."""
    waiter = dynamodb.get_waiter("table_exists")
    config = {"Delay": WAIT_DELAY_SECONDS, "MaxAttempts": WAIT_MAX_ATTEMPTS}
    for _ in range(WAIT_MAX_ATTEMPTS):
        waiter.wait(TableName=table, WaiterConfig=config)
        described = dynamodb.describe_table(TableName=table)["Table"]
        indexes = described.get("GlobalSecondaryIndexes", ())
        if all(i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in indexes):
            return
        time.sleep(WAIT_DELAY_SECONDS)
    raise TimeoutError(f"DynamoDB table {table} did not become ACTIVE")


def ensure_bucket_and_table(s3: Any, dynamodb: Any, bucket: str, table: str) -> SetupReport:
    """Make sure the bucket and the table (with its indexes) exist and are usable."""
    bucket_created = ensure_bucket(s3, bucket)
    table_created, indexes = ensure_table(dynamodb, table)
    return SetupReport(bucket_created, table_created, indexes)
