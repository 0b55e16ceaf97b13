"""Face detection: finds faces in frames and cuts aligned crops for the embedder.

``detect.model.FaceDetector`` wraps facenet-pytorch's MTCNN (its weights ship in
the wheel), runs frames of equal size as one batch, filters by probability and
face size (``DetectSettings``), and crops each face with a margin measured in
crop pixels, as facenet-pytorch's ``extract_face`` does.
"""
