"""Factual prompts for causal tracing: a subject, a relation, and the one word a model should say next.

Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT") asks *where* a model
recalls a fact such as "The Eiffel Tower is located in the city of -> Paris". Each :class:`Fact` holds what that
analysis needs: the ``prompt`` (text up to the answer), the ``subject`` as it is spelled in the prompt (the tokens
that get corrupted with noise), the ``answer`` with its leading space (``" Paris"``, one token for most
tokenizers) and the ``relation`` it is an instance of (``"landmark_city"``).

Two sources of facts:

- :data:`FACTS`: 280 facts about the real world, written for this package, over eleven relations
  (capitals, languages, continents and currencies of countries; the country of a city, of a landmark and of a
  company; the city of a landmark; the sport of an athlete, the instrument of a musician, the field of a
  scientist). The subject usually sits early in the prompt, so that tokens follow it: tracing compares the
  subject's last token with the prompt's last token. All are stable facts with one obvious next word.
- :func:`toy_facts`: the invented facts of the synthetic world ``zoo/toy-lm`` was trained on
  (:mod:`circuitlab.tasks.toy_world`), asked by default with each fact's *held-out* template, the sentence never
  seen in training, so a correct answer shows the fact is stored with the person rather than the sentence.

A model only "knows" a fact when its answer is a single token for the model's tokenizer and the model's top-1
next-token prediction after the prompt is that token; tracing is run on those facts alone. :func:`known_facts`
returns them; :func:`known_facts_report` also says what was dropped and why (a :class:`KnownFacts`):

    import circuitlab
    from circuitlab.tasks.factual import FACTS, known_facts, known_facts_report, toy_facts
    from circuitlab.tasks.toy_world import load_world

    model = circuitlab.load_model("gemma-3-270m")
    report = known_facts_report(model, FACTS)
    print(report.summary())       # "199 of 280 facts known by gemma-3-270m; 6 dropped as multi-token answers, ..."
    facts = report.known          # the same list as known_facts(model, FACTS), in FACTS order

    toy = circuitlab.load_model("zoo/toy-lm")
    world = load_world("src/circuitlab/zoo/weights/toy-lm")
    known_facts(toy, toy_facts(world))   # the held-out fact queries toy-lm answers correctly

The check is batched: prompts are grouped by token length (so no padding is needed and every prompt is read at
its own last position), run in chunks under ``max_memory``, and only the last position is unembedded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_finite, check_known_words, check_max_memory,
                             final_residual, model_name, progress_bar, readout, row_bytes, row_chunks, shorten,
                             to_tokens, token_label)
from circuitlab.errors import InputError
from circuitlab.tasks.toy_world import World, fact_sentence


@dataclass(frozen=True)
class Fact:
    """One factual prompt: ``Fact("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris",
    "landmark_city")``.

    Attributes:
        prompt: the text before the answer, without a trailing space (the answer carries it).
        subject: the subject exactly as it is spelled in ``prompt``; its first occurrence is the subject.
        answer: the next word with its leading space (``" Paris"``).
        relation: what kind of fact it is (``"capital"``, ``"home"``, ...).
    """

    prompt: str
    subject: str
    answer: str
    relation: str

    def __post_init__(self) -> None:
        for name in ("prompt", "subject", "answer", "relation"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InputError(f"Fact {name} must be a string; got {type(value).__name__} {shorten(value)}.")
        if not self.prompt.strip():
            raise InputError("Fact prompt is empty; give the text before the answer, e.g. "
                             "'The Eiffel Tower is located in the city of'.")
        if self.prompt != self.prompt.rstrip():
            raise InputError(f"Fact prompt {shorten(self.prompt)} ends with whitespace; end the prompt at its last "
                             "word and put the space on the answer (' Paris').")
        if not self.subject.strip():
            raise InputError(f"Fact subject is empty for prompt {shorten(self.prompt)}; give the subject as it is "
                             "spelled in the prompt (e.g. 'The Eiffel Tower').")
        if self.subject not in self.prompt:
            raise InputError(f"Fact subject {shorten(self.subject)} does not occur in the prompt "
                             f"{shorten(self.prompt)}; give the "
                             "subject exactly as the prompt spells it (same case and spacing).")
        if not self.answer.startswith(" ") or not self.answer.strip():
            raise InputError(f"Fact answer {shorten(self.answer)} must be a word with a leading space, e.g. ' Paris': "
                             "the answer follows the prompt after a space, and most tokenizers attach that space "
                             "to the answer's token. Write ' ' + the word.")
        if not self.relation.strip():
            raise InputError(f"Fact relation is empty for prompt {shorten(self.prompt)}; name the kind of fact "
                             "(e.g. 'capital').")

    @property
    def text(self) -> str:
        """The whole statement: prompt followed by answer."""
        return self.prompt + self.answer


def _facts(relation: str, rows: Sequence[tuple[str, str, str]]) -> tuple[Fact, ...]:
    """``(prompt, subject, answer word)`` rows as facts of one relation (the answer gets its leading space)."""
    return tuple(Fact(prompt, subject, " " + answer, relation) for prompt, subject, answer in rows)


_COUNTRY_CAPITAL = _facts("country_capital", [
    ("The capital city of France is called", "France", "Paris"),
    ("Germany has its capital in the city of", "Germany", "Berlin"),
    ("The capital of Spain is the city of", "Spain", "Madrid"),
    ("The capital city of Portugal is called", "Portugal", "Lisbon"),
    ("Greece has its capital in the city of", "Greece", "Athens"),
    ("The capital of Austria is the city of", "Austria", "Vienna"),
    ("The capital city of Poland is called", "Poland", "Warsaw"),
    ("Ireland has its capital in the city of", "Ireland", "Dublin"),
    ("The capital of the United Kingdom is the city of", "United Kingdom", "London"),
    ("The capital city of Russia is called", "Russia", "Moscow"),
    ("Japan has its capital in the city of", "Japan", "Tokyo"),
    ("The capital of China is the city of", "China", "Beijing"),
    ("The capital city of Canada is called", "Canada", "Ottawa"),
    ("Australia has its capital in the city of", "Australia", "Canberra"),
    ("The capital of Sweden is the city of", "Sweden", "Stockholm"),
    ("The capital city of Norway is called", "Norway", "Oslo"),
    ("Finland has its capital in the city of", "Finland", "Helsinki"),
    ("The capital of Denmark is the city of", "Denmark", "Copenhagen"),
    ("The capital city of Belgium is called", "Belgium", "Brussels"),
    ("The Czech Republic has its capital in the city of", "Czech Republic", "Prague"),
    ("The capital of Hungary is the city of", "Hungary", "Budapest"),
    ("The capital city of Thailand is called", "Thailand", "Bangkok"),
    ("South Korea has its capital in the city of", "South Korea", "Seoul"),
    ("The capital of Peru is the city of", "Peru", "Lima"),
    ("The capital city of Chile is called", "Chile", "Santiago"),
    ("Kenya has its capital in the city of", "Kenya", "Nairobi"),
    ("The capital of Cuba is the city of", "Cuba", "Havana"),
    ("The capital city of Iraq is called", "Iraq", "Baghdad"),
    ("The Philippines has its capital in the city of", "Philippines", "Manila"),
    ("The capital of Vietnam is the city of", "Vietnam", "Hanoi"),
    ("The capital city of Turkey is called", "Turkey", "Ankara"),
    ("Iceland has its capital in the city of", "Iceland", "Reykjavik"),
    ("The capital of Romania is the city of", "Romania", "Bucharest"),
    ("The capital city of Bulgaria is called", "Bulgaria", "Sofia"),
    ("Serbia has its capital in the city of", "Serbia", "Belgrade"),
    ("The capital of Venezuela is the city of", "Venezuela", "Caracas"),
    ("The capital city of Ecuador is called", "Ecuador", "Quito"),
    ("New Zealand has its capital in the city of", "New Zealand", "Wellington"),
    ("The capital of Syria is the city of", "Syria", "Damascus"),
    ("The capital city of Saudi Arabia is called", "Saudi Arabia", "Riyadh"),
    ("Lebanon has its capital in the city of", "Lebanon", "Beirut"),
    ("The capital of Pakistan is the city of", "Pakistan", "Islamabad"),
    ("The capital city of Nepal is called", "Nepal", "Kathmandu"),
    ("Morocco has its capital in the city of", "Morocco", "Rabat"),
    ("The capital of Ghana is the city of", "Ghana", "Accra"),
])

_COUNTRY_LANGUAGE = _facts("country_language", [
    ("In France, most people speak", "France", "French"),
    ("The official language of Germany is", "Germany", "German"),
    ("People in Italy speak", "Italy", "Italian"),
    ("Most people in Mexico speak", "Mexico", "Spanish"),
    ("Brazil's official language is", "Brazil", "Portuguese"),
    ("In Japan, the main language is", "Japan", "Japanese"),
    ("People in South Korea mostly speak", "South Korea", "Korean"),
    ("The main language of Russia is", "Russia", "Russian"),
    ("In Greece, people speak", "Greece", "Greek"),
    ("The official language of the Netherlands is", "Netherlands", "Dutch"),
    ("Most people in Sweden speak", "Sweden", "Swedish"),
    ("In Norway, the main language is", "Norway", "Norwegian"),
    ("Most people in Finland speak", "Finland", "Finnish"),
    ("People in Denmark speak", "Denmark", "Danish"),
    ("The official language of Poland is", "Poland", "Polish"),
    ("In Turkey, people mostly speak", "Turkey", "Turkish"),
    ("Hungary's official language is", "Hungary", "Hungarian"),
    ("Most people in the Czech Republic speak", "Czech Republic", "Czech"),
    ("In Thailand, the national language is", "Thailand", "Thai"),
    ("The official language of Vietnam is", "Vietnam", "Vietnamese"),
    ("Most people in Israel speak", "Israel", "Hebrew"),
    ("The official language of Saudi Arabia is", "Saudi Arabia", "Arabic"),
    ("In Iran, most people speak", "Iran", "Persian"),
    ("Iceland's official language is", "Iceland", "Icelandic"),
    ("Most people in Romania speak", "Romania", "Romanian"),
    ("Most people in Colombia speak", "Colombia", "Spanish"),
    ("In Austria, the official language is", "Austria", "German"),
    ("The main language spoken in Australia is", "Australia", "English"),
])

_COUNTRY_CONTINENT = _facts("country_continent", [
    ("Kenya is a country on the continent of", "Kenya", "Africa"),
    ("Nigeria is located on the continent of", "Nigeria", "Africa"),
    ("The country of Ethiopia is part of the continent of", "Ethiopia", "Africa"),
    ("Ghana is a country in West", "Ghana", "Africa"),
    ("Tanzania is a country in East", "Tanzania", "Africa"),
    ("Angola is a country on the continent of", "Angola", "Africa"),
    ("Germany is a country on the continent of", "Germany", "Europe"),
    ("Poland is located in central", "Poland", "Europe"),
    ("Geographically, Sweden belongs to the continent of", "Sweden", "Europe"),
    ("Portugal is a country in southern", "Portugal", "Europe"),
    ("Hungary is a landlocked country in central", "Hungary", "Europe"),
    ("Japan is an island country on the continent of", "Japan", "Asia"),
    ("Vietnam is a country in Southeast", "Vietnam", "Asia"),
    ("Mongolia is a landlocked country in", "Mongolia", "Asia"),
    ("Nepal is a mountainous country in South", "Nepal", "Asia"),
    ("Geographically, Thailand belongs to the continent of", "Thailand", "Asia"),
])

_COUNTRY_CURRENCY = _facts("country_currency", [
    ("Japan's currency is called the", "Japan", "yen"),
    ("The currency used in India is the", "India", "rupee"),
    ("Russia's currency is the", "Russia", "ruble"),
    ("The currency of Mexico is the", "Mexico", "peso"),
    ("The currency of Brazil is called the", "Brazil", "real"),
    ("The currency of Switzerland is the Swiss", "Switzerland", "franc"),
    ("The currency of South Africa is the", "South Africa", "rand"),
    ("The currency of South Korea is called the", "South Korea", "won"),
    ("The currency of Sweden is the Swedish", "Sweden", "krona"),
    ("The currency of Thailand is the", "Thailand", "baht"),
    ("Turkey's currency is the Turkish", "Turkey", "lira"),
    ("The currency of Israel is the", "Israel", "shekel"),
    ("The currency used in Germany is the", "Germany", "euro"),
    ("The currency of the United Kingdom is the", "United Kingdom", "pound"),
    ("Saudi Arabia's currency is the Saudi", "Saudi Arabia", "riyal"),
    ("The currency of Hungary is the", "Hungary", "forint"),
    ("Norway's currency is the Norwegian", "Norway", "krone"),
    ("The currency of Italy is the", "Italy", "euro"),
    ("Canada's currency is the Canadian", "Canada", "dollar"),
    ("The currency of Vietnam is the", "Vietnam", "dong"),
    ("The currency of China is called the", "China", "yuan"),
])

_CITY_COUNTRY = _facts("city_country", [
    ("Kyoto is a city in", "Kyoto", "Japan"),
    ("The city of Osaka is in the country of", "Osaka", "Japan"),
    ("Munich is a large city in southern", "Munich", "Germany"),
    ("Hamburg is a port city in northern", "Hamburg", "Germany"),
    ("Marseille is a port city in southern", "Marseille", "France"),
    ("Lyon is a city in the country of", "Lyon", "France"),
    ("Barcelona is the second largest city of", "Barcelona", "Spain"),
    ("Seville is a city in southern", "Seville", "Spain"),
    ("Milan is a city in northern", "Milan", "Italy"),
    ("Naples is a city in southern", "Naples", "Italy"),
    ("With its canals, Venice is one of the most visited cities in", "Venice", "Italy"),
    ("Toronto is the largest city in", "Toronto", "Canada"),
    ("Vancouver is a city on the west coast of", "Vancouver", "Canada"),
    ("Melbourne is a city in the south-east of", "Melbourne", "Australia"),
    ("Shanghai is a huge city on the east coast of", "Shanghai", "China"),
    ("Mumbai is a city on the west coast of", "Mumbai", "India"),
    ("Istanbul is the largest city in", "Istanbul", "Turkey"),
    ("Manchester is a city in the north of", "Manchester", "England"),
    ("Glasgow is the largest city in", "Glasgow", "Scotland"),
    ("Krakow is a city in southern", "Krakow", "Poland"),
    ("Porto is a city in the north of", "Porto", "Portugal"),
    ("Rotterdam is a port city in the", "Rotterdam", "Netherlands"),
    ("Antwerp is a port city in the country of", "Antwerp", "Belgium"),
    ("Gothenburg is a city on the west coast of", "Gothenburg", "Sweden"),
    ("Salzburg is a city in the country of", "Salzburg", "Austria"),
    ("Zurich is the largest city in", "Zurich", "Switzerland"),
    ("Casablanca is the largest city in", "Casablanca", "Morocco"),
    ("Saint Petersburg is the second largest city in", "Saint Petersburg", "Russia"),
    ("Rio de Janeiro is a large city in the country of", "Rio de Janeiro", "Brazil"),
])

_LANDMARK_CITY = _facts("landmark_city", [
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower", "Paris"),
    ("The Colosseum stands in the city of", "The Colosseum", "Rome"),
    ("Big Ben is a clock tower in the city of", "Big Ben", "London"),
    ("The Sagrada Familia is a basilica in", "The Sagrada Familia", "Barcelona"),
    ("The Brandenburg Gate is a monument in the city of", "The Brandenburg Gate", "Berlin"),
    ("The Acropolis overlooks the city of", "The Acropolis", "Athens"),
    ("The Kremlin is a fortress in the heart of", "The Kremlin", "Moscow"),
    ("The Louvre is an art museum in", "The Louvre", "Paris"),
    ("The Forbidden City is a palace complex in", "The Forbidden City", "Beijing"),
    ("Tower Bridge crosses the Thames in", "Tower Bridge", "London"),
    ("The Trevi Fountain is a famous fountain in", "The Trevi Fountain", "Rome"),
    ("The Hagia Sophia is a landmark in the city of", "The Hagia Sophia", "Istanbul"),
    ("The Rijksmuseum is the national museum in", "The Rijksmuseum", "Amsterdam"),
    ("The Prado Museum is an art museum in the city of", "The Prado Museum", "Madrid"),
    ("The Charles Bridge is a medieval bridge in the city of", "The Charles Bridge", "Prague"),
    ("The Atomium is a building in", "The Atomium", "Brussels"),
    ("The Burj Khalifa is a skyscraper in", "The Burj Khalifa", "Dubai"),
    ("The CN Tower is a tall tower in the city of", "The CN Tower", "Toronto"),
    ("The Space Needle is a tower in the city of", "The Space Needle", "Seattle"),
    ("The White House is located in", "The White House", "Washington"),
    ("The Alhambra is a palace in", "The Alhambra", "Granada"),
    ("Westminster Abbey is a church in the city of", "Westminster Abbey", "London"),
    ("The Arc de Triomphe is a monument in", "The Arc de Triomphe", "Paris"),
    ("Schönbrunn Palace is in the city of", "Schönbrunn Palace", "Vienna"),
    ("The Uffizi Gallery is an art museum in", "The Uffizi Gallery", "Florence"),
])

_LANDMARK_COUNTRY = _facts("landmark_country", [
    ("The Taj Mahal is a famous monument in the country of", "The Taj Mahal", "India"),
    ("The Great Wall was built across northern", "The Great Wall", "China"),
    ("Machu Picchu is an Inca citadel in the country of", "Machu Picchu", "Peru"),
    ("Petra is an ancient city carved into rock in", "Petra", "Jordan"),
    ("Angkor Wat is a temple complex in the country of", "Angkor Wat", "Cambodia"),
    ("Christ the Redeemer is a famous statue in the country of", "Christ the Redeemer", "Brazil"),
    ("The Pyramids of Giza are located in the country of", "The Pyramids of Giza", "Egypt"),
    ("Stonehenge is a prehistoric monument in the country of", "Stonehenge", "England"),
    ("Neuschwanstein Castle is a palace in", "Neuschwanstein Castle", "Germany"),
    ("Mount Fuji is the highest mountain in", "Mount Fuji", "Japan"),
    ("Chichen Itza is a Mayan city in", "Chichen Itza", "Mexico"),
    ("Uluru is a large rock formation in", "Uluru", "Australia"),
    ("Mount Kilimanjaro is a mountain in the country of", "Mount Kilimanjaro", "Tanzania"),
    ("The Great Barrier Reef is located in the country of", "The Great Barrier Reef", "Australia"),
    ("The Palace of Versailles is in the country of", "The Palace of Versailles", "France"),
    ("Pompeii is an ancient Roman city in the country of", "Pompeii", "Italy"),
    ("The Galapagos Islands belong to", "The Galapagos Islands", "Ecuador"),
    ("Loch Ness is a lake in the country of", "Loch Ness", "Scotland"),
    ("Borobudur is a Buddhist temple in the country of", "Borobudur", "Indonesia"),
    ("Mount Vesuvius is a volcano in", "Mount Vesuvius", "Italy"),
    ("Ha Long Bay is a bay in", "Ha Long Bay", "Vietnam"),
    ("Mount Olympus is the highest mountain in", "Mount Olympus", "Greece"),
])

_COMPANY_COUNTRY = _facts("company_country", [
    ("Toyota's headquarters are in the country of", "Toyota", "Japan"),
    ("Sony is an electronics company based in", "Sony", "Japan"),
    ("Nintendo is a video game company from", "Nintendo", "Japan"),
    ("Honda is a car maker based in", "Honda", "Japan"),
    ("Panasonic is an electronics company based in", "Panasonic", "Japan"),
    ("Samsung is a company headquartered in South", "Samsung", "Korea"),
    ("Hyundai is a car company from South", "Hyundai", "Korea"),
    ("Volkswagen is a car maker based in", "Volkswagen", "Germany"),
    ("BMW is a car company from the country of", "BMW", "Germany"),
    ("Siemens is an industrial company based in", "Siemens", "Germany"),
    ("Adidas is a sportswear company from", "Adidas", "Germany"),
    ("Porsche is a sports car maker based in", "Porsche", "Germany"),
    ("The headquarters of Nokia are in", "Nokia", "Finland"),
    ("Ericsson is a telecommunications company based in", "Ericsson", "Sweden"),
    ("IKEA is a furniture company that comes from", "IKEA", "Sweden"),
    ("Volvo is a car brand from", "Volvo", "Sweden"),
    ("Nestle is a food company headquartered in", "Nestle", "Switzerland"),
    ("Rolex is a watch maker based in", "Rolex", "Switzerland"),
    ("The car maker Ferrari is based in", "Ferrari", "Italy"),
    ("Lamborghini is a sports car maker based in", "Lamborghini", "Italy"),
    ("Gucci is a fashion brand from the country of", "Gucci", "Italy"),
    ("Lego is a toy company based in", "Lego", "Denmark"),
    ("Heineken is a brewing company from the", "Heineken", "Netherlands"),
    ("Philips is an electronics company founded in the", "Philips", "Netherlands"),
    ("Michelin is a tyre company based in", "Michelin", "France"),
    ("Renault is a car maker headquartered in", "Renault", "France"),
    ("Huawei is a technology company based in", "Huawei", "China"),
    ("Zara is a clothing brand from", "Zara", "Spain"),
    ("Guinness is a dark beer from", "Guinness", "Ireland"),
])

_ATHLETE_SPORT = _facts("athlete_sport", [
    ("Roger Federer is famous for playing", "Roger Federer", "tennis"),
    ("Serena Williams won many titles in the sport of", "Serena Williams", "tennis"),
    ("Rafael Nadal is one of the greatest players in the history of", "Rafael Nadal", "tennis"),
    ("Novak Djokovic plays professional", "Novak Djokovic", "tennis"),
    ("Michael Jordan is best known for playing", "Michael Jordan", "basketball"),
    ("LeBron James plays professional", "LeBron James", "basketball"),
    ("Kobe Bryant spent his whole career playing", "Kobe Bryant", "basketball"),
    ("Tiger Woods became famous playing", "Tiger Woods", "golf"),
    ("Jack Nicklaus is one of the greatest players in the history of", "Jack Nicklaus", "golf"),
    ("Muhammad Ali was a champion in the sport of", "Muhammad Ali", "boxing"),
    ("Mike Tyson was a heavyweight champion in the sport of", "Mike Tyson", "boxing"),
    ("Babe Ruth was a legendary player of", "Babe Ruth", "baseball"),
    ("Derek Jeter played professional", "Derek Jeter", "baseball"),
    ("Wayne Gretzky is the greatest scorer in the history of ice", "Wayne Gretzky", "hockey"),
    ("Sachin Tendulkar is one of the greatest players in the history of", "Sachin Tendulkar", "cricket"),
    ("Don Bradman is remembered as a great player of", "Don Bradman", "cricket"),
    ("Michael Phelps won most of his Olympic medals in", "Michael Phelps", "swimming"),
    ("Garry Kasparov was a world champion at the game of", "Garry Kasparov", "chess"),
    ("Magnus Carlsen is a champion player of", "Magnus Carlsen", "chess"),
    ("Lionel Messi is one of the greatest players in the history of", "Lionel Messi", "football"),
    ("Tom Brady played American", "Tom Brady", "football"),
    ("Eddy Merckx is considered the greatest rider in the history of", "Eddy Merckx", "cycling"),
])

_MUSICIAN_INSTRUMENT = _facts("musician_instrument", [
    ("Jimi Hendrix was famous for playing the", "Jimi Hendrix", "guitar"),
    ("Eric Clapton is a rock musician known for his skill on the", "Eric Clapton", "guitar"),
    ("B.B. King was a blues musician who played the", "B.B. King", "guitar"),
    ("Carlos Santana is a musician known for playing the", "Carlos Santana", "guitar"),
    ("Louis Armstrong was a jazz musician who played the", "Louis Armstrong", "trumpet"),
    ("Miles Davis was a jazz musician who played the", "Miles Davis", "trumpet"),
    ("Dizzy Gillespie was famous for playing the", "Dizzy Gillespie", "trumpet"),
    ("John Coltrane was a jazz musician who played the", "John Coltrane", "saxophone"),
    ("Charlie Parker was known for playing the alto", "Charlie Parker", "saxophone"),
    ("Yo-Yo Ma is a musician who plays the", "Yo-Yo Ma", "cello"),
    ("Itzhak Perlman is a virtuoso on the", "Itzhak Perlman", "violin"),
    ("Niccolò Paganini was a virtuoso of the", "Niccolò Paganini", "violin"),
    ("Jascha Heifetz was a virtuoso on the", "Jascha Heifetz", "violin"),
    ("Vladimir Horowitz was a famous performer on the", "Vladimir Horowitz", "piano"),
    ("Glenn Gould was a Canadian musician who played the", "Glenn Gould", "piano"),
    ("Frédéric Chopin wrote most of his music for the", "Frédéric Chopin", "piano"),
    ("Thelonious Monk was a jazz musician who played the", "Thelonious Monk", "piano"),
    ("In the Beatles, Ringo Starr played the", "Ringo Starr", "drums"),
    ("Keith Moon was a rock musician who played the", "Keith Moon", "drums"),
    ("John Bonham of Led Zeppelin played the", "John Bonham", "drums"),
    ("Benny Goodman was a jazz musician who played the", "Benny Goodman", "clarinet"),
])

_SCIENTIST_FIELD = _facts("scientist_field", [
    ("Albert Einstein is famous for his work in", "Albert Einstein", "physics"),
    ("Charles Darwin made his name in the field of", "Charles Darwin", "biology"),
    ("Gregor Mendel is known as the father of modern", "Gregor Mendel", "genetics"),
    ("Dmitri Mendeleev made his name in the field of", "Dmitri Mendeleev", "chemistry"),
    ("Antoine Lavoisier is called the father of modern", "Antoine Lavoisier", "chemistry"),
    ("Edwin Hubble made his discoveries in the field of", "Edwin Hubble", "astronomy"),
    ("Johannes Kepler is known for his work in", "Johannes Kepler", "astronomy"),
    ("Nicolaus Copernicus made his name in the field of", "Nicolaus Copernicus", "astronomy"),
    ("Adam Smith is known as the father of modern", "Adam Smith", "economics"),
    ("John Maynard Keynes made his name in the field of", "John Maynard Keynes", "economics"),
    ("Noam Chomsky is famous for his work in", "Noam Chomsky", "linguistics"),
    ("Carl Friedrich Gauss made major contributions to", "Carl Friedrich Gauss", "mathematics"),
    ("Leonhard Euler made major contributions to", "Leonhard Euler", "mathematics"),
    ("Niels Bohr is known for his work in atomic", "Niels Bohr", "physics"),
    ("Richard Feynman was a professor of theoretical", "Richard Feynman", "physics"),
    ("Max Planck is known for his work in theoretical", "Max Planck", "physics"),
    ("Linus Pauling is famous for his work in", "Linus Pauling", "chemistry"),
    ("Jean Piaget made his name in the field of", "Jean Piaget", "psychology"),
    ("Charles Lyell is known as a founder of modern", "Charles Lyell", "geology"),
    ("Euclid is known as the father of", "Euclid", "geometry"),
    ("Hippocrates is known as the father of", "Hippocrates", "medicine"),
    ("Herodotus is known as the father of", "Herodotus", "history"),
])

#: Facts about the real world for causal tracing, written for circuitlab (not taken from any data set): stable
#: facts whose answer is one common word, grouped by relation (see the module docstring).
FACTS: tuple[Fact, ...] = (_COUNTRY_CAPITAL + _COUNTRY_LANGUAGE + _COUNTRY_CONTINENT + _COUNTRY_CURRENCY
                           + _CITY_COUNTRY + _LANDMARK_CITY + _LANDMARK_COUNTRY + _COMPANY_COUNTRY
                           + _ATHLETE_SPORT + _MUSICIAN_INSTRUMENT + _SCIENTIST_FIELD)


# ---------------------------------------------------------------------------------------------------------
# The synthetic facts of zoo/toy-lm
# ---------------------------------------------------------------------------------------------------------

def toy_facts(world: World, template: Optional[int] = None) -> list[Fact]:
    """The facts of a synthetic :class:`~circuitlab.tasks.toy_world.World`: one per person and relation.

    Each is the query prompt of :func:`~circuitlab.tasks.toy_world.fact_sentence` (``"Zorvath lives in"`` ->
    ``" Pellmoor"``), with the person's name as subject and the relation's name (``"home"``) as relation, in the
    order people x relations. By default each fact is asked with its held-out template
    (``world.heldout_template[person][relation]``), the one sentence never used for it in training, which tests
    that the fact is stored with the person; ``template=i`` asks every fact with template ``i`` instead.
    """
    if not isinstance(world, World):
        raise InputError(f"toy_facts needs a World (circuitlab.tasks.toy_world.load_world); got "
                         f"{type(world).__name__}.")
    if template is not None:
        n = min(len(spec["templates"]) for spec in world.relations.values())
        if isinstance(template, bool) or not isinstance(template, int) or not 0 <= template < n:
            raise InputError(f"template={shorten(template)} is out of range: every relation of this world has at least "
                             f"{n} templates (0 to {n - 1}). Give one of those, or None for the held-out ones.")
    out = []
    for person in world.people:
        for relation in world.relations:
            t = world.heldout_template[person][relation] if template is None else template
            prompt, answer = fact_sentence(world, person, relation, t)
            out.append(Fact(prompt, person, answer, relation))
    return out


# ---------------------------------------------------------------------------------------------------------
# Which facts a model knows
# ---------------------------------------------------------------------------------------------------------

@dataclass
class KnownFacts:
    """Which of some facts a model knows (see :func:`known_facts_report`).

    Each fact given lands in exactly one list, and each list keeps the order the facts were given in.

    Attributes:
        known: single-token answer, and the model's top-1 next token after the prompt is that answer.
        multi_token: the answer is not one token for this model's tokenizer (several tokens, or a word it reads
            as its unknown token), so the fact cannot be checked by one next-token prediction.
        wrong: single-token answer, but the model's top-1 next token is another one.
        predictions: the model's top-1 next token (as a string) after each prompt it was run on (every fact in
            ``known`` and ``wrong``).
        model: the model's name.
    """

    known: list[Fact]
    multi_token: list[Fact]
    wrong: list[Fact]
    predictions: dict[Fact, str] = field(default_factory=dict)
    model: str = ""

    @property
    def total(self) -> int:
        """How many facts were checked."""
        return len(self.known) + len(self.multi_token) + len(self.wrong)

    def summary(self) -> str:
        """One line: ``"199 of 280 facts known by gemma-3-270m; 6 dropped as multi-token answers, 75 wrong"``."""
        by = f" by {self.model}" if self.model else ""
        return (f"{len(self.known)} of {self.total} facts known{by}; {len(self.multi_token)} dropped as "
                f"multi-token answers, {len(self.wrong)} wrong")

    def by_relation(self) -> dict[str, dict[str, int]]:
        """Counts per relation, in order of first appearance: ``{"country_capital": {"known": 38,
        "multi_token": 0, "wrong": 7, "total": 45}, ...}``."""
        counts: dict[str, dict[str, int]] = {}
        for kind in ("known", "multi_token", "wrong"):
            for fact in getattr(self, kind):
                row = counts.setdefault(fact.relation, {"known": 0, "multi_token": 0, "wrong": 0, "total": 0})
                row[kind] += 1
                row["total"] += 1
        return counts


def single_token(model: ModelLike, answer: str) -> Optional[int]:
    """The token id of ``answer`` if this model's tokenizer spells it as exactly one token, else None.

    The rule of :func:`circuitlab.core.answer_id` without the error: several tokens, or a word that a word-level
    tokenizer reads as its unknown token, give None.
    """
    model = as_model(model)
    if model.tokenizer is None or not isinstance(answer, str) or not answer:
        return None
    try:
        check_known_words(model, answer, "the answer")
    except InputError:
        return None
    ids = model.to_tokens(answer, prepend_bos=False)[0].tolist()
    return int(ids[0]) if len(ids) == 1 else None


def known_facts_report(model: ModelLike, facts: Sequence[Fact] = FACTS, *, max_memory: int = DEFAULT_MAX_MEMORY,
                       progress: bool = False) -> KnownFacts:
    """Sort ``facts`` into those ``model`` knows, those with multi-token answers and those it gets wrong.

    A fact is known when its answer is a single token for the model's tokenizer and the model's top-1
    prediction after the prompt (BOS prepended as the model does by default) is that token (Meng et al. 2022).
    Prompts are grouped by token length and run in batches under ``max_memory`` bytes of activations; only the
    last position's logits are computed.
    """
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    if isinstance(facts, Fact) or not isinstance(facts, Sequence) or isinstance(facts, str):
        raise InputError(f"facts must be a list of Fact; got {type(facts).__name__}. Wrap one fact in a list.")
    for i, fact in enumerate(facts):
        if not isinstance(fact, Fact):
            raise InputError(f"facts[{i}] is a {type(fact).__name__}, not a Fact; build it with "
                             "Fact(prompt, subject, answer, relation).")
    if model.tokenizer is None:
        raise InputError("known_facts reads text prompts and answers, but this model has no tokenizer. Use a "
                         "model with one (e.g. zoo/toy-lm or a pretrained model).")

    answer_of: dict[str, Optional[int]] = {}  # answer text -> its token id, None if not one token
    for fact in facts:
        if fact.answer not in answer_of:
            answer_of[fact.answer] = single_token(model, fact.answer)

    # tokenize the checkable prompts one by one and group them by length: no padding, last position = prompt end
    groups: dict[int, list[tuple[int, torch.Tensor]]] = defaultdict(list)
    for i, fact in enumerate(facts):
        if answer_of[fact.answer] is not None:
            row = to_tokens(model, fact.prompt)[0]
            groups[len(row)].append((i, row))

    batches = []
    for length, rows in sorted(groups.items()):
        per_row = row_bytes(model, length) + 2 * 4 * model.cfg.d_vocab_out  # + one position's fp32 logits
        for sl in row_chunks(len(rows), per_row, max_memory):
            batches.append(rows[sl])
    top1: dict[int, int] = {}
    with torch.inference_mode():
        for batch in progress_bar(batches, progress=progress, desc="known facts", unit="batch"):
            tokens = torch.stack([row for _, row in batch])
            resid, _ = final_residual(model, tokens)
            logits = readout(model, resid[:, -1])
            check_finite(model, tokens, "the model's logits on the fact prompts", logits)
            for (i, _), token in zip(batch, logits.argmax(-1).tolist()):
                top1[i] = token

    known, multi, wrong = [], [], []
    predictions: dict[Fact, str] = {}
    for i, fact in enumerate(facts):
        if i not in top1:
            multi.append(fact)
            continue
        predictions[fact] = token_label(model, top1[i])
        (known if top1[i] == answer_of[fact.answer] else wrong).append(fact)
    return KnownFacts(known, multi, wrong, predictions, model_name(model))


def known_facts(model: ModelLike, facts: Sequence[Fact] = FACTS, *, max_memory: int = DEFAULT_MAX_MEMORY,
                progress: bool = False) -> list[Fact]:
    """The facts ``model`` knows, in the order given: single-token answer and top-1 prediction (see
    :func:`known_facts_report`, which also says what was dropped)."""
    return known_facts_report(model, facts, max_memory=max_memory, progress=progress).known
