"""The committed stubs match the .proto contract (regenerate with `make protos`)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from recsys.v1 import recommender_pb2

PROTOS = Path(__file__).resolve().parents[1] / "protos"


def test_generated_stubs_are_not_stale(tmp_path: Path) -> None:
    out = tmp_path / "descriptor.pb"
    # Compared as descriptors, not as source text: grpcio-tools versions format the files differently.
    code = protoc.main(["protoc", f"-I{PROTOS}", f"--descriptor_set_out={out}", "recsys/v1/recommender.proto"])
    assert code == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _drop_json_names(fresh.message_type)  # the generated module's copy carries none
    committed = descriptor_pb2.FileDescriptorProto.FromString(recommender_pb2.DESCRIPTOR.serialized_pb)
    assert fresh == committed, "protos/recsys/v1 stubs are stale: run `make protos` and commit the result"


def _drop_json_names(messages: list[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_package_matches_the_import_path() -> None:
    assert recommender_pb2.DESCRIPTOR.package == "recsys.v1"
    assert recommender_pb2.DESCRIPTOR.name == "recsys/v1/recommender.proto"
