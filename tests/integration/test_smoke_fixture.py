def test_readyz_reports_current_schema(client):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["schema"]["current"] == r.json()["schema"]["head"]
