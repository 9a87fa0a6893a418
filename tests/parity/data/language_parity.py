"""`anneal-data data clean --languages` (CLD2, trainer/data/language_filter.h) against langdetect (PyPI), an
independent detector (a port of Google's language-detection: naive Bayes over character n-grams), seeded.

Corpus: clear rows (a question and its answer, both in one language) in twelve languages, and mixed rows (the
question in one language, the answer in another; a sentence switching language midway).

1. Every clear row: CLD2's language (the report's detected language of each row when only `un` is allowed, so
   every row is dropped naming its top language) equals the truth, and so does langdetect's top language.
2. `--languages en,zh` keeps exactly the clear rows whose truth is en or zh and drops every other clear row as
   wrong_language naming its true language; the report's dropped_by_language counts agree.
3. Mixed rows: both detectors' top languages are printed side by side, each must be one of the row's two
   languages, and the rows where they differ are reported rather than hidden (on this corpus they differ on
   4 of 6: on short mixes each tends to pick a different side). The confidence (the share of the text in the
   languages asked for) on the en+zh row: CLD2 splits it by script, so it passes en,zh at 0.9 and fails en.
4. Refusals: an unknown code and a confidence outside (0, 1] exit non-zero naming them.

Usage: language_parity.py ANNEAL_DATA_BINARY WORK_DIR
"""
import json
import os
import shutil
import subprocess
import sys

from langdetect import DetectorFactory, detect_langs

DetectorFactory.seed = 0

# langdetect's codes -> CLD2's (the rest are the same ISO 639-1 codes).
TO_CLD2 = {"zh-cn": "zh", "zh-tw": "zh-Hant", "he": "iw"}

CLEAR = [
    ("en", "What should I pack for a week of hiking in the mountains?",
     "Bring warm layers, a waterproof jacket, sturdy boots and enough food and water for every day of the trip."),
    ("en", "How does a bank decide whether to approve a mortgage application?",
     "It looks at your income, your existing debts, your credit history and the value of the house you want."),
    ("fr", "Quelle est la meilleure saison pour visiter la Provence ?",
     "Le printemps est idéal : les champs de lavande commencent à fleurir et il ne fait pas encore trop chaud."),
    ("fr", "Comment préparer une bonne pâte à crêpes ?",
     "Mélangez la farine, les œufs et le lait progressivement, puis laissez reposer la pâte pendant une heure."),
    ("de", "Wie lange dauert die Zugfahrt von Berlin nach München?",
     "Mit dem schnellsten Zug dauert die Fahrt ungefähr vier Stunden, mit Umstiegen kann es länger dauern."),
    ("de", "Warum sollte man regelmäßig Sport treiben?",
     "Bewegung stärkt das Herz, verbessert die Stimmung und hilft dabei, im Alter gesund zu bleiben."),
    ("es", "¿Cuál es la forma más fácil de aprender a cocinar?",
     "Empieza con recetas sencillas, cocina todos los días y no tengas miedo de equivocarte al principio."),
    ("es", "¿Por qué el cielo es azul durante el día?",
     "La atmósfera dispersa la luz azul del sol mucho más que los otros colores, por eso vemos el cielo azul."),
    ("it", "Qual è il modo migliore per imparare una nuova lingua?",
     "Bisogna parlare ogni giorno con persone madrelingua, leggere molto e non avere paura di sbagliare."),
    ("pt", "Qual é a melhor época para visitar o Rio de Janeiro?",
     "Entre maio e outubro o tempo é mais seco e agradável, e as praias ficam menos cheias de turistas."),
    ("nl", "Hoe kan ik mijn fiets het beste onderhouden?",
     "Houd de ketting schoon en goed gesmeerd, controleer de bandenspanning en laat de remmen regelmatig nakijken."),
    ("ru", "Как лучше всего подготовиться к экзамену?",
     "Составьте план, повторяйте материал каждый день понемногу и обязательно высыпайтесь перед экзаменом."),
    ("ru", "Почему зимой в Сибири так холодно?",
     "Сибирь находится далеко от океанов, поэтому зимой там устанавливается очень холодный и сухой воздух."),
    ("zh", "我应该如何准备一次长途旅行？",
     "提前规划路线，预订好住宿，带上必要的药品和证件，并且留出足够的时间休息。"),
    ("zh", "为什么多喝水对身体有好处？",
     "水可以帮助身体调节体温，促进新陈代谢，还能帮助肾脏排出体内的废物。"),
    ("ja", "日本で一番有名な山はどこですか？",
     "富士山です。高さは三千七百七十六メートルで、夏には多くの人が頂上まで登ります。"),
    ("ko", "한국에서 가장 인기 있는 음식은 무엇인가요?",
     "김치와 불고기, 비빔밥이 가장 유명하며 외국인 관광객들에게도 인기가 많습니다."),
    ("ar", "ما هي أفضل طريقة لتعلم البرمجة؟",
     "ابدأ بلغة بسيطة مثل بايثون، وتدرب كل يوم على حل مسائل صغيرة، ثم انتقل إلى مشاريع أكبر."),
]

MIXED = [
    ("en", "fr", "Can you recommend a good restaurant near the station?",
     "Bien sûr, il y a un excellent bistrot juste en face de la gare, avec une cuisine traditionnelle."),
    ("en", "zh", "What is the capital city of China and how big is it?",
     "中国的首都是北京，人口超过两千万，是一座历史悠久的城市。"),
    ("de", "es", "Wo kann ich in dieser Stadt gute Schuhe kaufen?",
     "En el centro hay muchas tiendas de zapatos, sobre todo en la calle principal cerca de la plaza."),
    ("en", "de", "I think we should leave early tomorrow morning, aber ich weiß nicht,",
     "ob der Zug pünktlich fährt, because the weather forecast says it will snow heavily overnight."),
    ("ru", "en", "Скажите, пожалуйста, как пройти к музею?",
     "Go straight ahead for two blocks and then turn left, the museum is on your right."),
    ("es", "pt", "¿Dónde está la biblioteca de la universidad?",
     "A biblioteca fica no segundo andar do prédio principal, ao lado da cantina dos estudantes."),
]


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def langdetect_top(text):
    best = detect_langs(text)[0]
    return TO_CLD2.get(best.lang, best.lang), best.prob


def write(path, rows):
    with open(path, "w") as f:
        for question, answer in rows:
            f.write(json.dumps({"instruction": question, "output": answer}, ensure_ascii=False) + "\n")


def clean(binary, work, src, *args):
    out, report = os.path.join(work, "out.jsonl"), os.path.join(work, "report.json")
    res = run([binary, "data", "clean", "--dataset", src, "--out", out, "--report", report, *args])
    assert res.returncode == 0, res.stderr
    with open(report) as f:
        rep = json.load(f)
    with open(out) as f:
        kept = [json.loads(line) for line in f if line.strip()]
    return rep, kept


def detected_by_row(rep, count):
    # With only `un` allowed, every row with letters is dropped, named by its top language. Origins are FILE:N.
    by_row = {}
    for d in rep["dropped_rows"]:
        assert d["reason"] == "wrong_language", d
        by_row[int(d["origin"].rsplit(":", 1)[1])] = d["language"]
    assert len(by_row) == count, (len(by_row), count, rep["dropped_rows"])
    first = min(by_row)
    return [by_row[first + i] for i in range(count)]


def main():
    binary, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    clear_path = os.path.join(work, "clear.jsonl")
    write(clear_path, [(q, a) for _, q, a in CLEAR])

    # 1. Clear rows: both detectors name the truth.
    rep, _ = clean(binary, work, clear_path, "--languages", "un", "--no-exact-dedup")
    ours = detected_by_row(rep, len(CLEAR))
    for (truth, q, a), cld2 in zip(CLEAR, ours):
        peer, prob = langdetect_top(q + "\n" + a)
        assert cld2 == truth, f"CLD2 says {cld2}, truth {truth}: {q}"
        assert peer == truth, f"langdetect says {peer} ({prob:.2f}), truth {truth}: {q}"
    print(f"clear: {len(CLEAR)} rows in {len(set(t for t, _, _ in CLEAR))} languages, CLD2 and langdetect both "
          f"name the true language of every row")

    # 2. The filter: en,zh keeps exactly the en and zh rows; the others are dropped naming their language.
    rep, kept = clean(binary, work, clear_path, "--languages", "en,zh", "--no-exact-dedup")
    want_kept = [q for t, q, _ in CLEAR if t in ("en", "zh")]
    got_kept = [row["messages"][0]["content"] for row in kept]
    assert got_kept == want_kept, got_kept
    want_dropped = {}
    for t, _, _ in CLEAR:
        if t not in ("en", "zh"):
            want_dropped[t] = want_dropped.get(t, 0) + 1
    assert rep["dropped"] == {"wrong_language": len(CLEAR) - len(want_kept)}, rep["dropped"]
    assert rep["dropped_by_language"] == want_dropped, rep["dropped_by_language"]
    for d in rep["dropped_rows"]:
        truth = CLEAR[int(d["origin"].rsplit(":", 1)[1]) - 1][0]
        assert d["language"] == truth and d["language_confidence"] < 0.5, (d, truth)
    print(f"filter en,zh: kept the {len(want_kept)} en/zh rows, dropped {len(CLEAR) - len(want_kept)} as "
          f"wrong_language naming each row's true language: {want_dropped}")

    # 3. Mixed rows: each detector names one of the row's languages; where they differ is printed.
    mixed_path = os.path.join(work, "mixed.jsonl")
    write(mixed_path, [(q, a) for _, _, q, a in MIXED])
    rep, _ = clean(binary, work, mixed_path, "--languages", "un", "--no-exact-dedup")
    ours = detected_by_row(rep, len(MIXED))
    differ = 0
    for (l1, l2, q, a), cld2 in zip(MIXED, ours):
        peer, prob = langdetect_top(q + "\n" + a)
        mark = "same" if peer == cld2 else "DIFFER"
        differ += peer != cld2
        print(f"  mixed {l1}+{l2}: CLD2 {cld2}, langdetect {peer} ({prob:.2f}) [{mark}]")
        assert cld2 in (l1, l2), f"CLD2 says {cld2} for an {l1}+{l2} row"
        assert peer in (l1, l2), f"langdetect says {peer} for an {l1}+{l2} row"
    print(f"mixed: {len(MIXED)} rows, each detector names one of the two languages; they differ on {differ}")
    # The confidence is the share of the text in the languages asked for. CLD2 splits a short row by script (the
    # en+zh row: zh 59%, en 39%) but gives a short Latin-script mix to one language (the en+fr row: en 99%), so
    # only the former shows the shares: it passes en,zh at 0.9 as a whole and fails en alone, named zh.
    en_zh_path = os.path.join(work, "en_zh.jsonl")
    write(en_zh_path, [(MIXED[1][2], MIXED[1][3])])
    rep, kept = clean(binary, work, en_zh_path, "--languages", "en,zh", "--language-confidence", "0.9")
    assert len(kept) == 1, rep
    rep, kept = clean(binary, work, en_zh_path, "--languages", "en", "--language-confidence", "0.9")
    assert kept == [] and rep["dropped_rows"][0]["language"] == "zh", rep["dropped_rows"]
    share = rep["dropped_rows"][0]["language_confidence"]
    assert 0.2 < share < 0.6, share
    rep, kept = clean(binary, work, en_zh_path, "--languages", "en", "--language-confidence", "0.3")
    assert len(kept) == 1, rep
    print(f"confidence: the en+zh row passes en,zh at 0.9, fails en at 0.9 (en share {share:.2f}, named zh), "
          f"passes en at 0.3")

    # 4. Refusals.
    out = os.path.join(work, "out.jsonl")
    res = run([binary, "data", "clean", "--dataset", clear_path, "--out", out, "--languages", "en,xx"])
    assert res.returncode != 0 and "unknown language 'xx'" in res.stderr, res.stderr
    res = run([binary, "data", "clean", "--dataset", clear_path, "--out", out, "--languages", "en",
               "--language-confidence", "1.5"])
    assert res.returncode != 0 and "language confidence 1.5" in res.stderr, res.stderr
    print("refusals: unknown code and confidence outside (0, 1] named")


if __name__ == "__main__":
    main()
