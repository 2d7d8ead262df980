"""Tests of the sensors."""
