"""The committed stubs match the .proto contract (regenerate with `make protos`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_tools import protoc
from recsys.admin.v1 import admin_pb2
from recsys.v1 import recommender_pb2

PROTOS = Path(__file__).resolve().parents[1] / "protos"


@pytest.mark.parametrize("generated", [recommender_pb2.DESCRIPTOR, admin_pb2.DESCRIPTOR], ids=lambda d: d.name)
def test_generated_stubs_are_not_stale(tmp_path: Path, generated: FileDescriptor) -> None:
    out = tmp_path / "descriptor.pb"
    # Compared as descriptors, not as source text: grpcio-tools versions format the files differently.
    code = protoc.main(["protoc", f"-I{PROTOS}", f"--descriptor_set_out={out}", generated.name])
    assert code == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _drop_json_names(fresh.message_type)  # the generated module's copy carries none
    committed = descriptor_pb2.FileDescriptorProto.FromString(generated.serialized_pb)
    assert fresh == committed, f"{generated.name} stubs are stale: run `make protos` and commit the result"


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


def test_package_matches_the_import_path() -> None:
    assert recommender_pb2.DESCRIPTOR.package == "recsys.v1"
    assert recommender_pb2.DESCRIPTOR.name == "recsys/v1/recommender.proto"
    assert admin_pb2.DESCRIPTOR.package == "recsys.admin.v1"
    assert admin_pb2.DESCRIPTOR.name == "recsys/admin/v1/admin.proto"


@pytest.mark.parametrize("proto", ["recsys/v1/recommender.proto", "recsys/admin/v1/admin.proto"])
def test_grpc_type_stubs_are_not_stale(tmp_path: Path, proto: str) -> None:
    """The committed *_pb2_grpc.pyi (what mypy reads for the stubs and servicers) match the .proto."""
    plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    if not plugin.is_file():
        pytest.skip(f"{plugin} missing: mypy-protobuf (the dev extra) is not installed")
    code = protoc.main(
        ["protoc", f"-I{PROTOS}", f"--plugin=protoc-gen-mypy_grpc={plugin}", f"--mypy_grpc_out={tmp_path}", proto]
    )
    assert code == 0
    stub = proto.replace(".proto", "_pb2_grpc.pyi")
    fresh, committed = (tmp_path / stub).read_text(), (PROTOS / stub).read_text()
    assert fresh == committed, f"{stub} is stale: run `make protos` and commit the result"
