"""Humble, Jazzy, Kilted, rolling: what rclpy_compat promises.

- Statically (no ROS needed): every module of the package, launch/ and test/ parses with Python
  3.10's grammar (Humble's Python), and nothing rclpy_compat lists as missing on Humble is used
  outside rclpy_compat. Humble has no wheels to run the suite on; this is its check.
- On the installed rclpy, over DDS: the Humble fallbacks behave like the APIs they stand in for.
  They rely only on what every branch does the same way (on-set callbacks run newest first and the
  first refusal wins; Client.call_async), so running them here tests them for Humble too.
"""

from __future__ import annotations

import ast
import contextlib
import threading
from pathlib import Path

import pytest

from ceed_vla_ros.nodes import rclpy_compat

REPO = Path(__file__).resolve().parents[1]
COMPAT_MODULE = REPO / "ceed_vla_ros" / "nodes" / "rclpy_compat.py"


def python_sources() -> list[Path]:
    files = [*(REPO / "ceed_vla_ros").rglob("*.py"), *(REPO / "launch").rglob("*.py"),
             *(REPO / "test").rglob("*.py"), REPO / "setup.py"]
    return sorted(p for p in files if "__pycache__" not in p.parts)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _called_name(call: ast.AST) -> str | None:
    if not isinstance(call, ast.Call):
        return None
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _uses(node: ast.AST, difference: rclpy_compat.Difference) -> bool:
    name = difference.name
    if difference.kind == "attribute":
        if isinstance(node, ast.Attribute) and node.attr == name:
            return True
        return isinstance(node, ast.ImportFrom) and any(alias.name == name for alias in node.names)
    if difference.kind == "module":
        parent, _, last = name.rpartition(".")
        if isinstance(node, ast.Import):
            return any(alias.name == name or alias.name.startswith(name + ".") for alias in node.names)
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == name or node.module.startswith(name + "."):
                return True
            return node.module == parent and any(alias.name == last for alias in node.names)
        return isinstance(node, ast.Attribute) and _dotted(node) == name
    if difference.kind == "call_keyword":
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name):
            return False
        too_many = difference.max_positional is not None and len(node.args) > difference.max_positional
        return too_many or any(keyword.arg == difference.keyword for keyword in node.keywords)
    if difference.kind == "with_call":
        return isinstance(node, (ast.With, ast.AsyncWith)) and any(
            _called_name(item.context_expr) == name for item in node.items)
    raise ValueError(f"unknown kind {difference.kind!r}")


def humble_problems(source: str, filename: str = "<snippet>") -> list[str]:
    """Where ``source`` uses rclpy API that Humble lacks (a SyntaxError if it is not Python 3.10)."""
    tree = ast.parse(source, filename, feature_version=(3, 10))
    problems = []
    for node in ast.walk(tree):
        for difference in rclpy_compat.missing_on(rclpy_compat.HUMBLE):
            if _uses(node, difference):
                problems.append(f"{filename}:{node.lineno}: {difference.name} (missing on "
                                f"{', '.join(difference.missing_on)}, {difference.upstream}); "
                                f"use {difference.instead}")
    return problems


# -- static: Python 3.10 grammar, no Humble-missing rclpy outside the compatibility module ----------
def test_every_module_parses_as_python_3_10_and_uses_no_rclpy_missing_on_humble():
    sources = python_sources()
    assert COMPAT_MODULE in sources and len(sources) > 50, "the source walk found too little"
    problems = []
    for path in sources:
        source = path.read_text()
        try:
            found = humble_problems(source, str(path.relative_to(REPO)))
        except SyntaxError as error:
            problems.append(f"{path.relative_to(REPO)}: not Python 3.10 syntax: {error}")
            continue
        if path != COMPAT_MODULE:
            problems.extend(found)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("snippet", [
    "node.add_post_set_parameters_callback(callback)",
    "from rclpy.parameter_client import AsyncParameterClient",
    "import rclpy.parameter_client",
    "from rclpy import parameter_client",
    "client = rclpy.parameter_client.AsyncParameterClient(node, 'other')",
    "response = client.call(request, timeout_sec=2.0)",
    "response = client.call(request, 2.0)",
    "with rclpy.init(args=[]):\n    pass",
    "with init():\n    pass",
    "with rclpy.Context() as context:\n    pass",
])
def test_the_check_flags_rclpy_that_humble_lacks(snippet):
    assert humble_problems(snippet), f"not flagged: {snippet!r}"


@pytest.mark.parametrize("snippet", [
    "rclpy_compat.add_post_set_callback(node, callback)",
    "from ceed_vla_ros.nodes.rclpy_compat import call_service\nresponse = call_service(client, request, 2.0)",
    "response = client.call(request)",
    "client = rclpy_compat.parameter_client(node, 'other')",
    "rclpy.init(args=[])\ntry:\n    pass\nfinally:\n    rclpy.try_shutdown()",
    "subprocess.call(['true'], timeout=5)",
])
def test_the_check_passes_what_humble_has(snippet):
    assert humble_problems(snippet) == []


def test_the_grammar_check_refuses_syntax_newer_than_python_3_10():
    with pytest.raises(SyntaxError):
        humble_problems("try:\n    pass\nexcept* ValueError:\n    pass\n")


# -- on the installed rclpy, over DDS: the fallbacks ----------------------------------------------
def _humble_like_node_class():
    from rclpy.node import Node

    class HumbleLikeNode(Node):
        """This rclpy's Node without add_post_set_parameters_callback, as Humble's Node is."""

        @property
        def add_post_set_parameters_callback(self):
            raise AttributeError("add_post_set_parameters_callback (not on Humble)")

    return HumbleLikeNode


def _later_validator(changes):
    from rcl_interfaces.msg import SetParametersResult

    for change in changes:
        if change.name == "mode" and change.value == "c":
            return SetParametersResult(successful=False, reason="mode: c is refused by the later validator")
    return SetParametersResult(successful=True)


@contextlib.contextmanager
def parameter_node(humble_like: bool, name: str):
    """A node of this package's kind: declare_parameters with on_accepted, then a second validator
    registered after it (as policy and camera_subscriber add checkpoint_change_validator)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from ceed_vla_ros.nodes.parameters import Param, declare_parameters

    params = (Param("mode", "a", "a mode", choices=("a", "b", "c")),
              Param("rate", 1.0, "a rate", minimum=0.5, maximum=10.0))
    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    node_class = _humble_like_node_class() if humble_like else Node
    node = node_class(name, context=context)
    accepted: list[list[tuple[str, object]]] = []

    def on_accepted(parameters):
        accepted.append([(p.name, p.value) for p in parameters])

    declare_parameters(node, params, on_accepted=on_accepted)
    node.add_on_set_parameters_callback(_later_validator)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node, accepted
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        thread.join(timeout=5)


@pytest.mark.parametrize("humble_like", [False, True], ids=["this_rclpy", "humble_fallback"])
@pytest.mark.parametrize("call", [rclpy_compat.call_service, rclpy_compat.call_service_via_call_async],
                         ids=["call_service", "call_via_call_async"])
def test_accepted_callback_runs_only_after_every_validator_accepted(ros_node, humble_like, call):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    name = f"compat_params_{'humble' if humble_like else 'native'}_{call.__name__}"
    with parameter_node(humble_like, name) as (node, accepted):
        client = ros_node.create_client(SetParameters, f"/{name}/set_parameters")
        assert client.wait_for_service(timeout_sec=10.0)

        def set_one(parameter_name, value):
            request = SetParameters.Request(parameters=[Parameter(parameter_name, value=value).to_parameter_msg()])
            response = call(client, request, 10.0)
            assert response is not None, "no SetParameters response"
            (result,) = response.results
            return result

        result = set_one("mode", "b")
        assert result.successful, result.reason
        assert accepted == [[("mode", "b")]]
        assert node.get_parameter("mode").value == "b"

        result = set_one("mode", "z")  # refused by declare_parameters' own validator
        assert not result.successful and "not one of" in result.reason
        result = set_one("mode", "c")  # refused by the validator registered after declare_parameters
        assert not result.successful and "later validator" in result.reason
        result = set_one("rate", 20.0)  # refused by rclpy (range)
        assert not result.successful
        assert accepted == [[("mode", "b")]], "on_accepted ran for a refused change"
        assert node.get_parameter("mode").value == "b"

        result = set_one("rate", 2.5)
        assert result.successful, result.reason
        assert accepted == [[("mode", "b")], [("rate", 2.5)]]


def test_humble_fallback_refuses_to_be_registered_after_a_validator():
    import rclpy
    from rcl_interfaces.msg import SetParametersResult

    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    try:
        node = _humble_like_node_class()("compat_order_check", context=context)
        try:
            rclpy_compat.post_set_via_on_set_callback(node, lambda parameters: None)  # rclpy's own only: fine
            node.add_on_set_parameters_callback(lambda parameters: SetParametersResult(successful=True))
            with pytest.raises(RuntimeError, match="before any on-set"):
                rclpy_compat.post_set_via_on_set_callback(node, lambda parameters: None)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_call_service_returns_none_when_no_server_answers(ros_node):
    from std_srvs.srv import Trigger

    client = ros_node.create_client(Trigger, "/compat_nobody_serves_this")
    assert rclpy_compat.call_service(client, Trigger.Request(), 0.5) is None
    assert rclpy_compat.call_service_via_call_async(client, Trigger.Request(), 0.5) is None


def test_parameter_client_is_rclpys_where_it_exists(ros_node):
    import importlib.util

    client = rclpy_compat.parameter_client(ros_node, "somebody")
    if importlib.util.find_spec("rclpy.parameter_client") is None:  # Humble
        assert isinstance(client, rclpy_compat.ParameterServicesClient)
    else:
        assert type(client).__module__ == "rclpy.parameter_client"
