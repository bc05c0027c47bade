"""Camera subscriber node: camera images -> checked, converted, cropped/resized frames for the policy.

Subscribes each topic of ``image_topics`` (sensor_msgs/Image, SensorData QoS; relative names, so
``-r image:=/my/camera`` remaps them) and republishes every usable frame, as rgb8 at the size the
checkpoint's metadata asks for, with its ORIGINAL header (stamp and frame), on ``/ceed_vla/image``
(the first topic) and ``/ceed_vla/image_<i>`` (topic i > 0). The policy keeps only the newest.

With ``image_transport: compressed`` it subscribes ``<topic>/compressed`` instead
(sensor_msgs/CompressedImage, JPEG or PNG, as image_transport's compressed plugin publishes; the base
name is resolved first, so remapping ``image`` still picks the camera) and decodes with OpenCV; the
output is the same rgb8 Image with the same header.

Frames with an unsupported encoding (anything but rgb8, bgr8, rgba8, bgra8, mono8), inconsistent
sizes or undecodable compressed data are dropped with a throttled warning; the node keeps running.
Raw frames are converted by the ROS 2 cv_bridge where it is importable and the equivalent numpy path
otherwise.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from ceed_vla_ros.image_conversion import (
    ImageConversionError,
    check_image_fields,
    compressed_to_rgb,
    crop_and_resize,
    image_to_rgb,
    rgb_to_image_fields,
)
from ceed_vla_ros.metadata import CheckpointError, load_metadata
from ceed_vla_ros.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher, Health, WarningThrottle
from ceed_vla_ros.nodes.interfaces import POLICY_IMAGE_TOPIC
from ceed_vla_ros.nodes.parameters import (
    Param,
    StartupError,
    checkpoint_change_validator,
    declare_parameters,
    parameter_values,
    run_node,
)
from ceed_vla_ros.paths import resolve_model_dir

try:  # the ROS 2 cv_bridge of a ROS install; the PyPI "cv-bridge" (ROS 1 copy) is not used
    from cv_bridge import CvBridge
except ImportError:
    CvBridge = None

OUTPUT_TOPIC = POLICY_IMAGE_TOPIC
STALL_S = 2.0
WARN_PERIOD_S = 2.0
TRANSPORTS = ("raw", "compressed")


PARAMETERS = (
    Param("image_topics", ["image"], "camera topics to subscribe (relative names can be remapped)",
          read_only=True, check=lambda v: None if len(v) > 0 else "must not be empty"),
    Param("model_dir", "", "shared model directory (empty: $CEED_VLA_MODEL_DIR or the shipped models/)",
          read_only=True),
    Param("checkpoint", "sim_student", "checkpoint whose metadata gives the crop and size"),
    Param("image_transport", "raw", "raw: sensor_msgs/Image on each topic; compressed: "
          "sensor_msgs/CompressedImage (JPEG/PNG) on <topic>/compressed, as image_transport names it",
          choices=TRANSPORTS, read_only=True),
)


class CameraSubscriberNode(Node):
    def __init__(self) -> None:
        super().__init__("camera_subscriber")
        declare_parameters(self, PARAMETERS, on_accepted=self._on_parameters_changed)
        values = parameter_values(self, PARAMETERS)
        self.model_dir = resolve_model_dir(values["model_dir"])
        self.add_on_set_parameters_callback(checkpoint_change_validator(self.model_dir))
        try:
            self.spec = load_metadata(self.model_dir, values["checkpoint"]).image
        except CheckpointError as error:
            raise StartupError(str(error)) from error
        self.bridge = CvBridge() if CvBridge is not None else None
        self.received = 0
        self.dropped = 0
        self.forwarded = 0
        self._last_frame_time: float | None = None
        self._warnings = WarningThrottle(self.get_logger(), WARN_PERIOD_S)
        compressed = values["image_transport"] == "compressed"
        for index, topic in enumerate(values["image_topics"]):
            output = OUTPUT_TOPIC if index == 0 else f"{OUTPUT_TOPIC}_{index}"
            publisher = self.create_publisher(Image, output, qos_profile_sensor_data)
            if compressed:  # image_transport: resolve (and remap) the base name, then add the transport
                topic = self.resolve_topic_name(topic).rstrip("/") + "/compressed"
            self.create_subscription(CompressedImage if compressed else Image, topic,
                                     lambda msg, p=publisher: self._on_image(msg, p), qos_profile_sensor_data)
            self.get_logger().info(f"{self.resolve_topic_name(topic)} -> {output} "
                                   f"({self.spec.width}x{self.spec.height}, crop {self.spec.crop})")
        DiagnosticsPublisher(self, self._health)

    def _health(self) -> Health:
        silent = None if self._last_frame_time is None else time.monotonic() - self._last_frame_time
        if silent is None or silent > STALL_S:
            level, message = WARN, "no camera frames" if silent is None else f"no camera frames for {silent:.1f} s"
        elif self.dropped and self.forwarded == 0:
            level, message = ERROR, "every frame dropped (see the log for why)"
        else:
            level, message = OK, "forwarding frames"
        return Health(level, message, values={"output_size": f"{self.spec.width}x{self.spec.height}"},
                      counters={"frames_received": self.received, "frames_forwarded": self.forwarded,
                                "frames_dropped": self.dropped})

    def _on_parameters_changed(self, parameters: list[Parameter]) -> None:
        for parameter in parameters:
            if parameter.name == "checkpoint":
                self.spec = load_metadata(self.model_dir, parameter.value).image

    def to_rgb(self, msg: Image | CompressedImage) -> np.ndarray:
        """Validated, then converted once: compressed frames by OpenCV; raw ones by cv_bridge where it
        is importable, else by numpy."""
        if isinstance(msg, CompressedImage):
            return compressed_to_rgb(msg.format, msg.data)
        if self.bridge is None:
            return image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        check_image_fields(msg.encoding, msg.height, msg.width, msg.step, msg.data)
        return np.asarray(self.bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))

    def _on_image(self, msg: Image | CompressedImage, publisher) -> None:
        self.received += 1
        self._last_frame_time = time.monotonic()
        try:
            rgb = crop_and_resize(self.to_rgb(msg), self.spec)
        except ImageConversionError as error:
            self.dropped += 1
            self._warnings.warn(
                f"frame dropped ({self.dropped} so far): {error}", kind=" ".join(str(error).split()[:2])
            )
            return
        out = Image(header=msg.header, **rgb_to_image_fields(rgb, "rgb8"))
        publisher.publish(out)
        self.forwarded += 1


def main(args: list[str] | None = None) -> int:
    return run_node(CameraSubscriberNode, args, description=__doc__, params=PARAMETERS)


if __name__ == "__main__":
    raise SystemExit(main())
