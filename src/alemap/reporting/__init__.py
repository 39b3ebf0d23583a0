"""Reporting layer: tables, provenance and (later) figures and reports.

Layer 7 of alemap, beside :mod:`alemap.io`: turns results into what people read.
"""
