"""schemathesis hooks for tests/api/schemathesis.sh: tar bodies are bytes like any other."""

import schemathesis

schemathesis.serializer.alias("application/x-tar", "application/octet-stream")
