"""Face embeddings: 512-d, L2-normalised FaceNet vectors.

``embed.weights`` converts the FaceNet 20180408-102900 (CASIA-WebFace) frozen
TensorFlow graph into a PyTorch state dict at set-up (``python -m embed.weights``)
and verifies it by hash; ``embed.model.FaceEmbedder`` runs InceptionResnetV1 with
those weights. ``embed.weights.MODEL_ID`` names the model in every event.
"""
