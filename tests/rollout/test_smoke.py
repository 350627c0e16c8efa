from rollout.models import PhaseStatus


def test_rollout_fixture_starts_in_preparation(rollout):
    assert list(rollout.phases.values_list("kind", "status")) == [
        ("preparation", PhaseStatus.ACTIVE),
        ("canary", PhaseStatus.PENDING),
        ("limited_beta", PhaseStatus.PENDING),
        ("general_availability", PhaseStatus.PENDING),
    ]
