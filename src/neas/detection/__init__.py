"""Object detection with a found ensemble as the backbone (issue 27): COCO evaluation so far."""
