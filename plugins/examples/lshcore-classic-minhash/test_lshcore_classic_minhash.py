"""The plugin's own test: lshcore's conformance kit on the family."""

from lshcore_classic_minhash import ClassicMinHash

from lshcore.testing import check_hash_family


def test_classic_minhash_conforms():
    report = check_hash_family(ClassicMinHash, dim=32, k=2, l=4)
    assert "collision" in report.passed
