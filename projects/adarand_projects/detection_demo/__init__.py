"""The offline detection demo set: real photos pasted on real backgrounds, written in Pascal VOC's layout."""
