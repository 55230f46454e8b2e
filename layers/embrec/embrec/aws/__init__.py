"""The AWS adapters, one per kind of resource, each taking injected boto3 clients: ``clients`` (the
clients and the one ClientError translation), ``store`` (the DynamoDB tables), ``artifacts`` (S3 publish and
fetch of versions, deltas and encoders). They never import the use cases.
"""

__all__ = ["artifacts", "clients", "store"]
