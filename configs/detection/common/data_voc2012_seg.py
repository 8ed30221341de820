# Pascal VOC 2012 instance segmentation (boxes + RLE masks) for tools/lazyconfig_train_net.py, in the
# shape of detectron2's configs/common/data/coco.py; plus `dataloader.stats`, the images the prior's
# statistics are computed on (the training set, test-time resize, no flip).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator
from omegaconf import OmegaConf

from adarand.detection.prior_init import stats_loader
from adarand.detection.trainer import has_fast_coco_eval

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="voc_2012_seg_train_single"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
                                    sample_style="choice", max_size=1333),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",  # VOC masks are RLE
    ),
    total_batch_size=8,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="voc_2012_seg_val_single", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    tasks=("bbox", "segm"),
    output_dir="${...train.output_dir}/inference",
    use_fast_impl=has_fast_coco_eval(),  # pycocotools when detectron2 has no _C ops
)

dataloader.stats = L(stats_loader)(
    dataset_names="${..train.dataset.names}",
    min_size=800,
    max_size=1333,
    image_format="${..train.mapper.image_format}",
    max_images="${...model.roi_heads.adarand.STATS_MAX_IMAGES}",
    labels="${...model.roi_heads.adarand.LABELS}",
)
