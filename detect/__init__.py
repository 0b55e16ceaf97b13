"""Face detection: finds faces in frames and cuts a crop of each for the embedder.

``detect.model.FaceDetector`` wraps facenet-pytorch's MTCNN (its weights ship in
the wheel), runs frames of equal size as one batch, filters by probability and
face size (``DetectSettings``), and crops each face with a margin measured in
crop pixels, as facenet-pytorch's ``extract_face`` does: a box crop, not
rotated or aligned on the landmarks (``detect.align``, landmark alignment, is
measured by ``bench.accuracy`` only; the pipeline does not use it).
``detect.quality`` is the gate that decides which faces are worth embedding.
"""
