from event_collector import worker_slots
from event_collector.worker_slots import claim_slot


def test_workers_take_the_free_slots_in_order_and_a_dead_workers_slot_is_taken_over(tmp_path):
    assert [claim_slot(tmp_path, 3) for _ in range(3)] == [0, 1, 2]
    # The worker in slot 1 dies: the operating system drops its lock with its files.
    worker_slots._held.pop(1).close()
    assert claim_slot(tmp_path, 3) == 1
    for held in worker_slots._held:
        held.close()
    worker_slots._held.clear()
