"""skyphot: source detection, deblending, measurement and forced photometry as a service."""
