"""OpenCV in the environment; ground truth and predictions of a tiny run drawn to PNG files."""
import numpy as np


def test_opencv_and_the_detectron2_visualizer_work():
    import cv2
    from detectron2.utils.visualizer import GenericMask, Visualizer

    image = np.zeros((40, 60, 3), np.uint8)
    ok, png = cv2.imencode(".png", image)
    assert ok and cv2.imdecode(png, cv2.IMREAD_COLOR).shape == (40, 60, 3)
    mask = np.zeros((40, 60), np.uint8)
    mask[5:25, 10:50] = 1
    # The Visualizer outlines masks through cv2.findContours: one polygon through the rectangle's
    # corner pixels (their centres: detectron2 adds 0.5).
    polygons = GenericMask(mask, 40, 60).polygons
    assert len(polygons) == 1
    xs, ys = polygons[0][0::2], polygons[0][1::2]
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (10.5, 49.5, 5.5, 24.5)
    drawn = Visualizer(image).overlay_instances(masks=[mask], assigned_colors=[(1.0, 0.0, 0.0)]).get_image()
    assert drawn.shape == (40, 60, 3)
    assert drawn[15, 30, 0] > 0 and drawn[35, 5].max() == 0  # inside tinted red, outside untouched
