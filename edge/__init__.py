"""Edge split computing: split ResNets (BottleFit), tensor codecs, split-point profiles.

Modules: ``resnet`` (torchvision-compatible ResNets and small ResNets), ``bottlefit``
(bottleneck injection), ``codec`` (uplink tensor codecs, JPEG sizes), ``profile``
(Neurosurgeon's per-stage profile). Nothing heavy is imported here.
"""
